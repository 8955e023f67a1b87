"""What training minimises and how: the optimizers, learning-rate schedules and losses, each a name -> builder table.

The tables are the single source of the accepted names: trial/config.py checks `optimizer`, `lr_schedule` and `loss`
against their keys, so a name added here is a name the config accepts.

    opt = OPTIMIZERS["sgd"](param_groups(model, cfg), cfg)
    schedule = SCHEDULES["onecycle"](opt, cfg, total_steps)     # schedule.after_batch(), schedule.after_epoch(acc)
    loss = LOSSES["cross_entropy"](cfg)(logits, labels)
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .config import TrialConfig

def param_groups(model: nn.Module, cfg: TrialConfig) -> list[dict]:
    """The trainable parameters in two groups with their own learning rate and weight decay: BatchNorm biases (at
    `norm_bias_lr_scale` times the learning rate, as airbench94's bias_scaler) and the rest. With
    `decoupled_weight_decay` each group's decay is weight_decay / its lr, so that SGD's per-step shrinkage lr x decay
    is weight_decay times the schedule's factor, whatever the peak lr (Loshchilov & Hutter 2019, "Decoupled Weight
    Decay Regularization"; airbench94 sets SGD's weight_decay this way)."""
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    trainable = [p for p in model.parameters() if p.requires_grad or id(p) in norm_biases]
    groups = [{"params": [p for p in trainable if id(p) not in norm_biases], "lr": cfg.learning_rate},
              {"params": [p for p in trainable if id(p) in norm_biases],
               "lr": cfg.learning_rate * cfg.norm_bias_lr_scale}]
    for group in groups:
        group["weight_decay"] = cfg.weight_decay / group["lr"] if cfg.decoupled_weight_decay else cfg.weight_decay
    return [g for g in groups if g["params"]]


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda groups, c: torch.optim.Adam(groups, lr=c.learning_rate),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, lr=c.learning_rate),
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c.learning_rate, momentum=c.momentum,
                                             nesterov=c.momentum > 0),
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


ONECYCLE_WARMUP = 0.25   # the fraction of the steps one-cycle warms up over


def onecycle(opt: torch.optim.Optimizer, total: int) -> Schedule:
    """One-cycle (Smith & Topin 2017): a quarter of the steps warming up, each group peaking at its own lr.
    OneCycleLR's warm-up ends at step ONECYCLE_WARMUP * total - 1, and it divides by the length of each phase: where
    that end is step 0 itself (a run of 4 steps, as `--smoke` makes) the warm-up has no length (ZeroDivisionError).
    There it ends a hair before step 0, so the first step is at the peak, as OneCycleLR has it for 1 to 3 steps (a
    warm-up ending before step 0); every other total keeps OneCycleLR's own schedule, step for step."""
    pct = ONECYCLE_WARMUP * (1 - 1e-6) if abs(ONECYCLE_WARMUP * total - 1) < 1e-9 else ONECYCLE_WARMUP
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in opt.param_groups], total_steps=total,
                                                        pct_start=pct), per_batch=True)


def warmup_linear(opt: torch.optim.Optimizer, c: TrialConfig, total: int) -> Schedule:
    """A linear rise from lr_start_factor to the peak over warmup_fraction of the steps, then a linear decay to
    lr_end_factor (airbench94's triangle: 0.2 -> 1 over 23% of the steps -> 0.07). A warm-up of 0 starts at the
    peak and only decays, one of 1 only rises (np.interp needs the points strictly in order: neither is given it)."""
    peak = c.warmup_fraction * total
    if peak <= 0:
        points, factors = [0, total], [1.0, c.lr_end_factor]
    elif peak >= total:
        points, factors = [0, total], [c.lr_start_factor, 1.0]
    else:
        points, factors = [0, peak, total], [c.lr_start_factor, 1.0, c.lr_end_factor]
    return Schedule(torch.optim.lr_scheduler.LambdaLR(opt, lambda step: float(np.interp(step, points, factors))),
                    per_batch=True)


# (optimizer, config, total training steps) -> Schedule; every one is correct for any total of 1 step or more
# (tests/test_optim.py steps each through 1 to 5)
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrialConfig, int], Schedule]] = {
    "plateau": lambda opt, c, total: Schedule(torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, "max", factor=c.lr_factor, patience=c.lr_patience)),
    "cosine": lambda opt, c, total: Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(opt, total), per_batch=True),
    "onecycle": lambda opt, c, total: onecycle(opt, total),
    "warmup_linear": warmup_linear,
    "constant": lambda opt, c, total: Schedule(),
}

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (logits [N, K], int64 labels [N]) -> scalar float32
LOSSES: dict[str, Callable[[TrialConfig], Loss]] = {
    "cross_entropy": lambda c: lambda logits, y: F.cross_entropy(logits.float(), y,
                                                                 label_smoothing=c.label_smoothing),
    # MSE between softmax outputs and one-hot targets, as in the activation x loss study this project grew from
    "mse": lambda c: lambda logits, y: F.mse_loss(logits.float().softmax(1),
                                                  F.one_hot(y, logits.shape[1]).float()),
}
