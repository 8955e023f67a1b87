"""Resumable runs for multi-fidelity search: the state of a run after each epoch, keyed by its config minus the budget.

NNI's Hyperband promotes a configuration by starting a new trial with the same parameters and a larger TRIAL_BUDGET
(epochs). With a resume file, that trial continues from the epochs its lower-budget run already trained instead of
starting again from zero. The key hashes the resolved config (seed included) without the budget and without run-only
keys, so only the same model, data and optimiser resume. Files live in CNNSEARCH_RESUME_DIR, default
<cache>/resume/<experiment id>; on remote workers each machine keeps its own, and a configuration promoted onto another
machine simply starts fresh. A missing, corrupt or incompatible file is a fresh start with a warning, never a failure.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from .config import TrialConfig, params_digest
from .data import cache_dir

# Keys that change how long or where a run trains, not what it learns.
RUN_ONLY = ("epochs", "threads", "device", "eval_test")


def resume_key(cfg: TrialConfig) -> str:
    return params_digest({k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY})


def resume_path(cfg: TrialConfig, directory: str | os.PathLike | None = None) -> Path:
    base = Path(directory or os.environ.get("CNNSEARCH_RESUME_DIR")
                or cache_dir() / "resume" / os.environ.get("NNI_EXP_ID", "standalone"))
    return base / f"{resume_key(cfg)}.pt"


def load(path: Path, cfg: TrialConfig) -> dict | None:
    """The saved state for this config, or None (with a warning when a file was there but unusable)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("key") != resume_key(cfg):
            raise ValueError("it belongs to another configuration")
    except Exception as err:   # a half-written or damaged file must not cost the trial
        print(f"[resume] ignoring {path} ({err}); starting from epoch 0", file=sys.stderr)
        return None
    if state["epoch"] > cfg.epochs:
        print(f"[resume] {path} has {state['epoch']} epochs, more than this run's {cfg.epochs}; starting from epoch 0",
              file=sys.stderr)
        return None
    return state


def save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)   # atomic: a reader sees the old state or the new one, never half of one
