"""What training minimises and how: the optimizers, learning-rate schedules and losses, each a name -> builder table.

The tables are the single source of the accepted names: trial/config.py checks `optimizer`, `lr_schedule` and `loss`
against their keys, so a name added here is a name the config accepts.

    opt = OPTIMIZERS["sgd"](model.parameters(), cfg)
    schedule = SCHEDULES["onecycle"](opt, cfg, total_steps)     # schedule.after_batch(), schedule.after_epoch(acc)
    loss = LOSSES["cross_entropy"](cfg)(logits, labels)
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .config import TrialConfig

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.learning_rate, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.learning_rate, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.learning_rate, momentum=c.momentum, nesterov=c.momentum > 0,
                                        weight_decay=c.weight_decay),
}


class Schedule:
    """A learning-rate scheduler and when it steps: after every batch (`per_batch`: cosine, one-cycle), or after every
    epoch on the validation accuracy (plateau); `scheduler` None keeps the rate constant."""

    def __init__(self, scheduler=None, per_batch: bool = False):
        self.scheduler, self.per_batch = scheduler, per_batch

    def after_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self, val_accuracy: float) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step(val_accuracy)

    def state_dict(self) -> dict | None:
        """What a resumed run restores: the plateau state; per-batch schedules are rebuilt for the new budget."""
        return self.scheduler.state_dict() if self.scheduler is not None and not self.per_batch else None

    def restore(self, state: dict | None, batches_done: int) -> None:
        """Continue a run that stopped after `batches_done` batches: plateau state is loaded as saved; a per-batch
        schedule (its shape depends on the total, so a resumed cosine run is close to, not equal to, a fresh run of
        the larger budget) is moved forward to that step."""
        if self.per_batch:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "scheduler.step() before optimizer.step()": intended here
                for _ in range(batches_done):
                    self.scheduler.step()
        elif self.scheduler is not None and state:
            self.scheduler.load_state_dict(state)


# (optimizer, config, total training steps) -> Schedule
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, "TrialConfig", int], Schedule]] = {
    "plateau": lambda opt, c, total: Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, "max", factor=c.lr_factor, patience=c.lr_patience)),
    "cosine": lambda opt, c, total: Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(opt, total), per_batch=True),
    # one-cycle (Smith & Topin 2017) with a quarter of the steps warming up
    "onecycle": lambda opt, c, total: Schedule(torch.optim.lr_scheduler.OneCycleLR(
        opt, c.learning_rate, total_steps=total, pct_start=0.25), per_batch=True),
    "constant": lambda opt, c, total: Schedule(),
}

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (logits [N, K], int64 labels [N]) -> scalar float32
LOSSES: dict[str, Callable[["TrialConfig"], Loss]] = {
    "cross_entropy": lambda c: lambda logits, y: F.cross_entropy(logits.float(), y,
                                                                 label_smoothing=c.label_smoothing),
    # MSE between softmax outputs and one-hot targets, as in the activation x loss study this project grew from
    "mse": lambda c: lambda logits, y: F.mse_loss(logits.float().softmax(1),
                                                  F.one_hot(y, logits.shape[1]).float()),
}
