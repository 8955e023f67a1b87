"""Averages of the weights over training steps, used to score and keep a model: an exponential moving average (EMA),
or airbench94's lookahead, which also moves the training weights to the average.

Both update after every optimizer step and expose the same few methods, so the training loop treats them alike:

    average = weight_average(model, cfg, total_steps)     # None when cfg.ema_decay is 0
    ... opt.step(); average.update(model)
    scored = average.scored(model)      # the module to validate
    average.finish(model)               # at the end: the model holds the weights that are kept
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

if TYPE_CHECKING:
    from .config import TrialConfig

LOOKAHEAD_EVERY = 5   # steps between lookahead updates (airbench94)


class EMA:
    """An exponential moving average of the weights and buffers (BatchNorm statistics), `decay` per step
    (torch.optim.swa_utils.AveragedModel). Training continues from the raw weights; validation, test and the kept
    model use the average."""

    def __init__(self, model: nn.Module, decay: float):
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def update(self, model: nn.Module) -> None:
        self.average.update_parameters(model)

    def scored(self, model: nn.Module) -> nn.Module:
        return self.average.module

    def finish(self, model: nn.Module) -> None:
        model.load_state_dict(self.average.module.state_dict())

    def state_dict(self) -> dict:
        return self.average.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state)


class Lookahead:
    """airbench94's lookahead (KellerJordan/cifar10-airbench, legacy/airbench94.py, LookaheadState): every
    LOOKAHEAD_EVERY steps, the average of every floating-point tensor of the state dict moves towards the weights
    with decay decay^LOOKAHEAD_EVERY x (step / total_steps)^3, and the weights are set to the average (Zhang et al.
    2019, "Lookahead Optimizer", with a decay that grows from 0); at the end the model takes the average. A run of
    fewer than LOOKAHEAD_EVERY steps never averaged: its average is still the initial weights, and the model keeps
    the weights it trained (it took the untrained ones back, silently, where the last weights are kept)."""

    def __init__(self, model: nn.Module, decay: float, total_steps: int):
        self.decay, self.total_steps, self.step = decay, max(1, total_steps), 0
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.step += 1
        if self.step % LOOKAHEAD_EVERY == 0:
            self._pull(model, self.decay ** LOOKAHEAD_EVERY * (self.step / self.total_steps) ** 3)

    @torch.no_grad()
    def _pull(self, model: nn.Module, decay: float) -> None:
        # a torch.compile wrapper prefixes every key: the average is keyed by the plain model's names
        state = {k.removeprefix("_orig_mod."): v for k, v in model.state_dict().items()}
        for key, average in self.average.items():
            average.lerp_(state[key], 1 - decay)
            state[key].copy_(average)

    def scored(self, model: nn.Module) -> nn.Module:
        return model

    def finish(self, model: nn.Module) -> None:
        if self.step >= LOOKAHEAD_EVERY:
            self._pull(model, 1.0)      # the weights become the average as it stands

    def state_dict(self) -> dict:
        return {"step": self.step, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for key, value in state["average"].items():
            self.average[key].copy_(value)


def weight_average(model: nn.Module, cfg: TrialConfig, total_steps: int) -> EMA | Lookahead | None:
    """The average `cfg` asks for (`ema_decay` per step, `lookahead`) over a run of `total_steps` steps, or None."""
    if not cfg.ema_decay:
        return None
    return Lookahead(model, cfg.ema_decay, total_steps) if cfg.lookahead else EMA(model, cfg.ema_decay)
