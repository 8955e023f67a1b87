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
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import TrialConfig, params_digest
from .data import cache_dir
from .optim import Schedule

# Keys that change how long or where a run trains, not what it learns; amp (bfloat16 or float32 arithmetic) too: a run
# whose first bfloat16 epoch was at chance trains on in float32, and its promoted trials resume it there
# (trial/precision.py, `fallback_of`).
RUN_ONLY = ("epochs", "threads", "device", "eval_test", "val_every_epoch", "amp")


@dataclass
class RunState:
    """What the training loop carries from epoch to epoch, and what a resumed run gets back: the per-epoch metrics,
    the best validation accuracy, its epoch and weights, and the epochs since it improved."""
    history: list[dict] = field(default_factory=list)
    best_acc: float = -1.0
    best_state: dict | None = None
    best_epoch: int = 0
    stale: int = 0
    amp_fallback: str | None = None   # why this run trains in float32 though its config asks for bfloat16


def resume_key(cfg: TrialConfig) -> str:
    """The identity of a run, budget aside: a 12-hex-digit hash of the config without RUN_ONLY keys."""
    return params_digest({k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY})


def resume_path(cfg: TrialConfig, directory: str | os.PathLike | None = None) -> Path:
    """The state file of `cfg`'s run in `directory` (default $CNNSEARCH_RESUME_DIR or <cache>/resume/<experiment>)."""
    base = Path(directory or os.environ.get("CNNSEARCH_RESUME_DIR")
                or cache_dir() / "resume" / os.environ.get("NNI_EXP_ID", "standalone"))
    return base / f"{resume_key(cfg)}.pt"


def fallback_of(path: Path, cfg: TrialConfig) -> str | None:
    """Why the run of `cfg` saved at `path` trains in float32 (its first bfloat16 epoch was at chance:
    trial/precision.py), so that resuming it continues in float32; None when there is no such state, it is another
    config's, unreadable (restore then says so), or it never fell back."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(saved, dict) or saved.get("key") != resume_key(cfg):
        return None
    return (saved.get("state") or {}).get("amp_fallback")


def restore(path: Path, cfg: TrialConfig, model: nn.Module, opt: torch.optim.Optimizer, schedule: Schedule,
            steps_per_epoch: int, average=None) -> RunState:
    """Load the state saved at `path` for this config into model, optimizer, schedule, the weight average (an
    EMA or Lookahead of trial/averaging.py) and
    the torch RNG, and return the loop's state; a fresh RunState (with a warning on stderr when a file was there but
    unusable) otherwise."""
    if not path.is_file():
        return RunState()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") != resume_key(cfg):
            raise ValueError("it belongs to another configuration")
    except Exception as err:   # a half-written or damaged file must not cost the trial
        print(f"[resume] ignoring {path} ({err}); starting from epoch 0", file=sys.stderr)
        return RunState()
    if saved["epoch"] > cfg.epochs:
        print(f"[resume] {path} has {saved['epoch']} epochs, more than this run's {cfg.epochs}; starting from epoch 0",
              file=sys.stderr)
        return RunState()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    if average is not None and saved.get("average") is not None:
        average.load_state_dict(saved["average"])
    schedule.restore(saved["scheduler"], saved["epoch"] * steps_per_epoch)
    torch.set_rng_state(saved["rng"])
    return RunState(**saved["state"])


def save(path: Path, cfg: TrialConfig, epoch: int, model: nn.Module, opt: torch.optim.Optimizer, schedule: Schedule,
         state: RunState, average=None) -> None:
    """Write the run's state after `epoch` atomically (temporary file, then rename): a reader sees the old state or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"key": resume_key(cfg), "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": schedule.state_dict(), "rng": torch.get_rng_state(), "state": vars(state),
                "average": average.state_dict() if average is not None else None}, tmp)
    os.replace(tmp, path)
