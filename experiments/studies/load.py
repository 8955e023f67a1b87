"""Load test of the search machinery: a local NNI experiment of many very short trials, every one accounted for.

    python -m experiments.studies.load --trials 300 --concurrency 8

Each trial is `python -m experiments.studies.load_trial` (load_trial.py): the whole adapter path of a real trial (NNI's
parameters in, the trial's own record written, one intermediate and one final result reported, with the hash of the
parameters it received) with no training, so the load is on NNI's manager, its tuner (Random) and the local training
service. Started through our secure starter (launch/local.py: 127.0.0.1 only). At the end it reads NNI's database and
the trials' own files back and prints: trials started and how they ended, final results recorded (each trial exactly
once), results lost (a trial that succeeded without its final result in the database, or whose result is not its own
parameters'), wall time, and the NNI manager's resident memory at the first poll, at the end, at its peak, and when a
quarter, half, three quarters and all of the trials had ended (steady memory grows less in the later quarters than in
the first). Exit status 1 when a result was lost or recorded twice.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

SPACE = {"learning_rate": {"_type": "loguniform", "_value": [1e-4, 1e-1]},
         "filters": {"_type": "choice", "_value": [8, 16, 32, 64]},
         "dropout": {"_type": "uniform", "_value": [0.0, 0.5]}}


def manager_process(port: int):
    """NNI's node manager serving `port` (psutil.Process), or None."""
    import psutil
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.endswith("main.js") for part in cmdline) and str(port) in cmdline:
            return proc
    return None


def run_load(trials: int, concurrency: int, workdir: str | Path) -> dict:
    """Run the experiment to its end and return the figures (see the module docstring)."""
    import psutil

    from experiments.launch import local
    from experiments.results.export import END_STATES
    rss: list[int] = []
    by_quarter: dict[int, float] = {}     # quarter of the trials ended (1..4) -> manager RSS (MB) when it was reached

    def sample(port: int) -> None:
        proc = manager_process(port)
        if proc is not None:
            try:
                rss.append(proc.memory_info().rss)
            except psutil.Error:
                return
            ended = sum(status in END_STATES for status in local.trial_statuses(port))
            for quarter in range(1, 5):
                if quarter not in by_quarter and ended >= quarter * trials / 4:
                    by_quarter[quarter] = round(rss[-1] / 2 ** 20, 1)

    command = f"{sys.executable} -m experiments.studies.load_trial --dataset mnist"
    exp_id, wall, table = local.run("load", command, SPACE, {"name": "Random", "class_args": {"seed": 0}}, workdir,
                                    trials, concurrency, on_poll=sample)
    succeeded = table[table["status"] == "SUCCEEDED"]
    lost = int((succeeded["n_final"] == 0).sum())
    not_own = int(succeeded["final_digest_ok"].eq(False).sum()) if "final_digest_ok" in table else 0
    return {"experiment": exp_id, "trials_asked": trials, "trials_started": len(table),
            "statuses": {k: int(v) for k, v in table["status"].value_counts().items()},
            "final_results_recorded": int(table["n_final"].sum()),
            "trials_with_more_than_one_final": int((table["n_final"] > 1).sum()),
            "results_lost": lost + not_own, "wall_s": round(wall, 1), "concurrency": concurrency,
            "manager_rss_mb_start": round(rss[0] / 2 ** 20, 1) if rss else None,
            "manager_rss_mb_end": round(rss[-1] / 2 ** 20, 1) if rss else None,
            "manager_rss_mb_max": round(max(rss) / 2 ** 20, 1) if rss else None, "rss_samples": len(rss),
            # the run stops polling once every trial ended: the last sample stands for 100% if no poll saw it
            "manager_rss_mb_at_25_50_75_100pct_ended": [by_quarter.get(1), by_quarter.get(2), by_quarter.get(3),
                                                        by_quarter.get(4, round(rss[-1] / 2 ** 20, 1) if rss else None)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.studies.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workdir", help="NNI's experiment directory (default: a temporary one, removed at the end)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nni-load-") as tmp:
        figures = run_load(args.trials, args.concurrency, args.workdir or tmp)
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    bad = figures["results_lost"] or figures["trials_with_more_than_one_final"] or \
        figures["trials_started"] != args.trials
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
