"""Export every trial of an NNI experiment into one table (pandas; CSV on disk), running or stopped.

It reads NNI's own record, the experiment's sqlite database (`<experiment dir>/db/nni.sqlite`, which NNI keeps for
running and stopped experiments alike), and each trial's own files in its output directory (`trial.json`: the
parameters the trial actually received; `final.json`: its final metrics, test accuracy included). The parameters in the
table are the trial's own; where NNI's record for that trial disagrees (NNI 3.0 can mis-pair them under concurrency),
`nni_params_mismatch` is true. Failed, early-stopped and cancelled trials are kept, with their status. For an nni.nas
experiment (experiments/nas/multitrial.py) NNI's record of a trial is its serialised model: its architecture is what
is compared, and the table has a param_<label> column per architecture label.

    python -m experiments.results.export EXPERIMENT_ID [--root ~/nni-experiments] [--out trials.csv]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import pandas as pd

from trial.config import flatten_params, params_digest
from trial.files import OutputError, read_json, write_file

DEFAULT_ROOT = Path.home() / "nni-experiments"
# NNI 3.0's trial statuses once a trial has ended, and those of trials stopped before their end
END_STATES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
STOPPED_STATES = ("USER_CANCELED", "EARLY_STOPPED", "SYS_CANCELED")
STOPPED_WITH_EXPERIMENT = "STOPPED_WITH_EXPERIMENT"   # ours: running when the experiment was stopped


def experiment_dir(experiment_id: str, root: str | Path | None = None) -> Path:
    """Where NNI keeps an experiment: <root>/<id>, or the logDir that NNI's manifest records for it."""
    root = Path(root).expanduser() if root else DEFAULT_ROOT
    if (root / experiment_id / "db" / "nni.sqlite").is_file():
        return root / experiment_id
    manifest = DEFAULT_ROOT / ".experiment"
    if manifest.is_file():
        entry = read_json(manifest).get(experiment_id)
        if entry and (Path(entry.get("logDir", "")) / experiment_id / "db" / "nni.sqlite").is_file():
            return Path(entry["logDir"]) / experiment_id
    raise FileNotFoundError(f"experiment {experiment_id!r} not found under {root} (nor in {manifest}); pass --root, "
                            f"the experimentWorkingDirectory of its config")


def _json(text):
    value = json.loads(text) if isinstance(text, str) else text
    # NNI stores metric data JSON-encoded twice
    return json.loads(value) if isinstance(value, str) else value


def _read_json(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def ranked_finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The SUCCEEDED trials with a final result, best final_default (validation accuracy) first; empty when none
    (no trial at all, or none that reported a final result: then the table has no final_default column)."""
    if trials.empty or "final_default" not in trials:
        return trials.iloc[0:0]
    finished = trials[(trials["status"] == "SUCCEEDED") & trials["final_default"].notna()]
    return finished.sort_values("final_default", ascending=False)


def load_experiment(exp_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(experiment profile: config, id, start/end in ms; one row per trial: status, parameters (param_*), final
    metrics (final_*), intermediate results, durations in seconds) from NNI's database in exp_dir, read-only.
    Raises sqlite3.Error when the database is missing or unreadable."""
    db = sqlite3.connect(f"file:{exp_dir / 'db' / 'nni.sqlite'}?mode=ro", uri=True)
    try:
        profile_row = db.execute("select params, id, startTime, endTime from ExperimentProfile "
                                 "order by revision desc limit 1").fetchone()
        events = db.execute("select timestamp, trialJobId, event, data, logPath, sequenceId from TrialJobEvent "
                            "order by timestamp").fetchall()
        metrics = db.execute("select timestamp, trialJobId, parameterId, type, sequence, data from MetricData "
                             "order by timestamp").fetchall()
    finally:
        db.close()
    profile = {"config": json.loads(profile_row[0]), "id": profile_row[1], "start_ms": profile_row[2],
               "end_ms": profile_row[3]} if profile_row else {}

    trials: dict[str, dict] = {}
    for ts, tid, event, data, log_path, seq in events:
        t = trials.setdefault(tid, {"trial_id": tid, "sequence": seq, "status": "WAITING", "start_ms": None,
                                    "end_ms": None, "log_path": log_path, "nni_record": None, "intermediate": [],
                                    "final": None, "metric_parameter_id": None})
        if data:
            t["nni_record"] = _json(data)
        if event == "RUNNING" and t["start_ms"] is None:
            t["start_ms"] = ts
        if event in END_STATES:
            t["end_ms"] = ts
        t["status"] = event
        t["log_path"] = log_path or t["log_path"]
    for ts, tid, pid, kind, seq, data in metrics:
        t = trials.get(tid)
        if t is None:
            continue
        value = _json(data)
        t["metric_parameter_id"] = pid
        if kind == "PERIODICAL":
            t["intermediate"].append(value)
        elif kind == "FINAL":
            t["final"] = value
            t["n_final"] = t.get("n_final", 0) + 1
    if profile.get("end_ms"):
        # NNI records no end for trials it kills when the experiment stops: say so rather than show them RUNNING
        for t in trials.values():
            if t["status"] in ("WAITING", "RUNNING"):
                t["status"] = STOPPED_WITH_EXPERIMENT
    return profile, pd.DataFrame([_row(t) for t in sorted(trials.values(), key=lambda t: t["sequence"] or 0)])


def _default(value):
    return value.get("default") if isinstance(value, dict) else value


def nni_parameters(record: dict) -> dict:
    """The parameters NNI's record gives a trial. An nni.nas trial's record is its serialised model, whose `sample`
    is the architecture: returned as the trial's adapter records it ({"family": "nas", "nas_arch": sample}), so its
    digest is comparable."""
    params = record.get("parameters", {}) or {}
    if isinstance(params, dict) and "model_symbol" in params and isinstance(params.get("sample"), dict):
        return {"family": "nas", "nas_arch": params["sample"]}
    return params


def _row(t: dict) -> dict:
    trial_dir = Path(t["log_path"]) if t["log_path"] else None
    own = _read_json(trial_dir / "trial.json") if trial_dir else {}
    final_file = _read_json(trial_dir / "final.json") if trial_dir else {}
    record = t["nni_record"] or {}
    nni_params = nni_parameters(record)
    params = own.get("sampled_params", nni_params)
    row = {"trial_id": t["trial_id"], "sequence": t["sequence"], "status": t["status"],
           "parameter_id": own.get("parameter_id", record.get("parameter_id")),
           "duration_s": (t["end_ms"] - t["start_ms"]) / 1000 if t["end_ms"] and t["start_ms"] else None,
           "start_ms": t["start_ms"], "end_ms": t["end_ms"],
           "params_source": "trial" if "sampled_params" in own else "nni",
           "nni_params_mismatch": bool(own) and params_digest(nni_params) != own.get("params_digest"),
           "n_intermediate": len(t["intermediate"]),
           # FINAL records NNI's database holds for the trial: 1 for a finished one (more: a result recorded twice)
           "n_final": t.get("n_final", 0),
           "intermediate": json.dumps([_default(v) for v in t["intermediate"]]),
           "trial_dir": str(trial_dir) if trial_dir else None}
    for k, v in flatten_params(params).items():
        if k == "nas_arch" and isinstance(v, dict):   # an architecture: a column per label, an input as its index
            row.update({f"param_{label}": c[0] if isinstance(c, list) and len(c) == 1 else c for label, c in v.items()})
        else:
            row[f"param_{k}"] = v
    final = t["final"] if isinstance(t["final"], dict) else ({"default": t["final"]} if t["final"] is not None else {})
    for k, v in {**final, **{k: v for k, v in final_file.items() if k not in final}}.items():
        row[f"final_{k}"] = v
    if final and "params_digest" in final and own:
        # the digest travels inside the metric: proof of which parameters produced this result
        row["final_digest_ok"] = final["params_digest"] == int(own["params_digest"], 16)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment_id")
    p.add_argument("--root", help="the experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--out", default=None, help="CSV path (default trials-<id>.csv)")
    args = p.parse_args(argv)
    out = args.out or f"trials-{args.experiment_id}.csv"
    try:
        profile, table = load_experiment(experiment_dir(args.experiment_id, args.root))
        write_file(out, table.to_csv(index=False))
    except (FileNotFoundError, OutputError, sqlite3.Error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}) -> {out}")
    if len(table) and table["nni_params_mismatch"].any():
        print(f"note: NNI's record disagrees with {int(table['nni_params_mismatch'].sum())} trials' own parameters "
              f"(NNI 3.0 mis-pairing); the table uses the trials' own", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
