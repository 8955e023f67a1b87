"""The tuners NNI 3.0 needs fixed, and how experiments name them.

`fixed_tpe.FixedTPE` and `fixed_hyperband.FixedHyperband` are NNI's TPE and Hyperband with the NNI 3.0 bugs our
searches hit worked around, `resumable_random.ResumableRandom` NNI's Random that does not draw its sets again after
`nnictl resume` (each module says why). NNI loads them as customized tuners from this folder; in an
experiment YAML (paths relative to the YAML, here one in nni_configs/):

    tuner:
      codeDirectory: ../experiments/tuners
      className: fixed_tpe.FixedTPE
      classArgs: {optimize_mode: maximize}

From Python (nni.experiment, experiments.launch.local) use the specs below. This module imports no NNI: the bracket
arithmetic also serves the benchmark on machines without it.
"""
from __future__ import annotations

import math
from pathlib import Path

TUNERS_DIR = Path(__file__).resolve().parent


def fixed_tpe(**tpe_args) -> dict:
    """FixedTPE as a customized-tuner spec for nni.experiment, maximizing, with NNI's `tpe_args` where given."""
    class_args = {"optimize_mode": "maximize", **({"tpe_args": tpe_args} if tpe_args else {})}
    return {"code_directory": str(TUNERS_DIR), "class_name": "fixed_tpe.FixedTPE", "class_args": class_args}


def fixed_hyperband(R: int, eta: int = 3) -> dict:
    """FixedHyperband as a customized-tuner spec, maximizing; R is the largest budget in epochs (TRIAL_BUDGET)."""
    return {"code_directory": str(TUNERS_DIR), "class_name": "fixed_hyperband.FixedHyperband",
            "class_args": {"optimize_mode": "maximize", "R": R, "eta": eta}}


def hyperband_brackets(R: int, eta: int) -> list[list[tuple[int, float]]]:
    """One Hyperband iteration as NNI 3.0 runs it (Li et al. 2018, "Hyperband", Algorithm 1): per bracket
    s = s_max .. 0, its rounds as (configurations, epochs each): n = ceil((s_max + 1) / (s + 1) * eta^s)
    configurations at r = R * eta^-s epochs, then floor(n * eta^-i) of them at r * eta^i in round i."""
    s_max = round(math.log(R, eta))
    brackets = []
    for s in range(s_max, -1, -1):
        n, r = math.ceil((s_max + 1) / (s + 1) * eta ** s), R * eta ** (-s)
        brackets.append([(math.floor(n * eta ** (-i)), r * eta ** i) for i in range(s + 1)])
    return brackets


def hyperband_trials(R: int, eta: int) -> int:
    """Trials one iteration starts (each promotion is a new trial)."""
    return sum(n for bracket in hyperband_brackets(R, eta) for n, _ in bracket)


def hyperband_resume_saving(R: int, eta: int) -> float:
    """The fraction of an iteration's epochs that promotions reuse when each resumes its previous round's run."""
    total = saved = 0.0
    for bracket in hyperband_brackets(R, eta):
        for i, (n, r) in enumerate(bracket):
            total += n * r
            if i:
                saved += n * bracket[i - 1][1]
    return saved / total
