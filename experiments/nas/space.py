"""The nni.nas model space of the `nas` family: trial/nas_space.py's network, with every decision an nni mutable.

The same builder as the plain network (trial.nas_space.build_into), given SearchChoices: an op is a LayerChoice, a
node's input an InputChoice, a stage's depth a Repeat and its width an nni.choice read by nni's Mutable* layers. nni's
freeze of an architecture gives the module NasNet builds from it, with the same state-dict keys:

    space = NasSpace((1, 28, 28), 10)
    arch = space.random()                       # labels -> choices (nni's sample)
    net = space.freeze(arch)                    # plain torch; load_state_dict works both ways with NasNet(.., arch)
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace

import nni
from nni.nas.nn.pytorch import (
    InputChoice,
    LayerChoice,
    ModelSpace,
    MutableBatchNorm2d,
    MutableConv2d,
    MutableLinear,
    Repeat,
)
from torch import nn

from trial.nas_space import NasNet, build_into


class SearchChoices:
    """Each decision as an nni mutable labelled as trial/nas_space.py names it."""
    # DilatedConv2d: nni's own conv; the supernet trains in float32 (the bfloat16 fix of trial.nas_space's
    # Float32DilatedConv2d is for the harness, which trains every chosen architecture)
    layers = SimpleNamespace(Conv2d=MutableConv2d, DilatedConv2d=MutableConv2d, BatchNorm2d=MutableBatchNorm2d,
                             Linear=MutableLinear)

    def width(self, label: str, values: Sequence[int]):
        return nni.choice(label, list(values))

    def repeat(self, label: str, values: Sequence[int], block: Callable[[int], nn.Module]) -> nn.Module:
        return Repeat(block, nni.choice(label, list(values)))

    def op(self, label: str, builders: Mapping[str, Callable[[], nn.Module]]) -> nn.Module:
        return LayerChoice({name: build() for name, build in builders.items()}, label=label)

    def input(self, label: str, n_candidates: int) -> nn.Module:
        return InputChoice(n_candidates, n_chosen=1, reduction="sum", label=label)


class NasSpace(ModelSpace):
    """The model space for images of `shape` (C, H, W), e.g. (1, 28, 28) or (3, 32, 32), with `num_classes` logits
    and dropout before the head, every cell gated with `cell_gate` (see trial.nas_space.NasNet; widths are the
    space's own, width_mult 1)."""

    def __init__(self, shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0,
                 cell_gate: bool = False):
        super().__init__()
        build_into(self, SearchChoices(), tuple(shape), num_classes, dropout, cell_gate)

    forward = NasNet.forward
