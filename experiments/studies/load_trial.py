"""The load study's trial: the adapter's whole NNI path with no training, so the load is on NNI, not on the trials.

    python -m experiments.studies.load_trial --dataset mnist        # takes `python -m trial`'s options

NNI's parameters in, the trial's own record (trial.json) written, one intermediate and one final result reported, as
`python -m trial` does (trial.adapter.main); the final `default` is the hash of the parameters it received mapped
into [0, 1), with `no_train: 1`, so experiments/studies/load.py can tell each result is its own trial's.
"""
from __future__ import annotations

import sys
from pathlib import Path

from trial import adapter
from trial.config import TrialConfig, params_digest
from trial.train import Report


def no_train(cfg: TrialConfig, args, sampled: dict, out: Path, report: Report | None) -> dict:
    """adapter.main's `run`: the metrics of a trial that trains nothing."""
    final = {"default": int(params_digest(sampled), 16) % 10000 / 10000, "no_train": 1}
    if report:
        report({"default": final["default"], "epoch": 1})
    else:
        print(f"no training: default {final['default']:.4f}")
    return final


if __name__ == "__main__":
    sys.exit(adapter.main(run=no_train))
