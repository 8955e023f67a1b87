"""NNI 3.0's Random tuner made to go on after `nnictl resume` without drawing the same parameters again:
`ResumableRandom`.

Why: NNI's Random draws from a generator seeded by its `seed` (mnist_random.yml sets one, so a re-run repeats its
draws). On `nnictl resume` NNI starts a new tuner with the same seed, and nothing tells it what was drawn before: its
`import_data` is empty, and its Deduplicator never acts on a space with a continuous parameter. The resumed search
draws the same sets again, so its first new trials retrain sets the experiment already trained (seen in
tests/test_experiment_resume.py: after the resume, a trial with the parameters of the experiment's first).

How: on resume NNI calls `load_checkpoint`; it reads every parameter set the experiment submitted from NNI's own
database (`<experiment>/db/nni.sqlite`, its TrialJobEvent records, opened read-only), and `import_data` adds the sets
NNI passes with results. A draw equal to one of them is drawn again, so a seeded search goes on with the sets one
run without the stop would have drawn next (tests/test_nni_configs.py). Draws stay NNI's (`suggest` and its
formatting). The database is read here, not through experiments.results.export: NNI loads this module from its
codeDirectory in the dispatcher's process, where only NNI and the standard library can be relied on (as for
fixed_tpe and fixed_hyperband).

Experiment configs load it as a customized tuner (paths relative to the YAML, here one in nni_configs/):

    tuner:
      codeDirectory: ../experiments/tuners
      className: resumable_random.ResumableRandom
      classArgs: {seed: 0}
"""
from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import nni
from nni.algorithms.hpo.random_tuner import RandomTuner, suggest
from nni.common.hpo_utils import deformat_parameters

_logger = logging.getLogger(__name__)
MAX_REDRAWS = 10_000   # then the space is taken as exhausted (a small all-choice space)


def parameters_key(params: dict) -> str:
    """One string per parameter set, whatever the number types (NNI's records hold JSON, draws numpy scalars)."""
    return json.dumps(params, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def submitted_parameters(experiment_dir: Path) -> list[dict]:
    """Every parameter set NNI's database records as submitted to a trial of the experiment in `experiment_dir`
    (the folder holding db/nni.sqlite); [] when there is no database. Raises sqlite3.Error for an unreadable one."""
    db = experiment_dir / "db" / "nni.sqlite"
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT data FROM TrialJobEvent WHERE data IS NOT NULL AND data != ''").fetchall()
    found = []
    for (data,) in rows:
        try:
            record = json.loads(data)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("parameters"), dict):
            found.append(record["parameters"])
    return found


class ResumableRandom(RandomTuner):
    """NNI's Random tuner (same class args: seed, optimize_mode) that never draws a set the experiment has submitted
    before a resume or received results for."""

    def __init__(self, seed: int | None = None, optimize_mode: str | None = None):
        super().__init__(seed=seed, optimize_mode=optimize_mode)
        self.tried: set[str] = set()

    def load_checkpoint(self) -> None:
        checkpoint = self.get_checkpoint_path()          # <experiment>/checkpoint, given by NNI on resume
        if checkpoint is None:
            return
        try:
            sets = submitted_parameters(Path(checkpoint).parent)
        except sqlite3.Error as err:
            _logger.warning(f"could not read the earlier trials' parameters ({err}): a resumed draw may repeat one")
            return
        self.tried.update(parameters_key(p) for p in sets)
        _logger.info(f"resumed: {len(self.tried)} parameter sets drawn before will not be drawn again")

    def import_data(self, data) -> None:
        for record in data:
            if isinstance(record.get("parameter"), dict):
                self.tried.add(parameters_key(record["parameter"]))

    def generate_parameters(self, *args, **kwargs):
        for _ in range(MAX_REDRAWS):
            params = deformat_parameters(self.dedup(suggest(self.rng, self.space)), self.space)
            key = parameters_key(params)
            if key not in self.tried:
                self.tried.add(key)
                return params
        raise nni.NoMoreTrialError(f"{MAX_REDRAWS} draws in a row were sets tried before")
