"""The `nas` network family: a cell-based space for architecture search, and the plain-torch network of one chosen
architecture. It never imports nni: `train()` and a GPU box without nni build these networks from the architecture
dict alone; experiments/nas/space.py builds the nni.nas model space from the same code.

The space, after DARTS (Liu et al. 2019, "DARTS: Differentiable Architecture Search", ICLR, arXiv:1806.09055: its
operation set, ReLU-conv-BN ordering and separable/dilated convs; cells of nodes with chosen inputs and ops):

    stem        conv 3x3 + BN to the first stage's width
    3 stages    stage 1 at full resolution; stages 2 and 3 start with a reduction (ReLU, conv 3x3 stride 2, BN) that
                halves the map, rounding up (28 -> 14 -> 7, 32 -> 16 -> 8; any side: 16 -> 8 -> 4, 96 -> 48 -> 24)
                and changes the width; then `depth` cells at that width (every op keeps the map size, so any side
                and channel count builds; compute grows with the side squared: 96x96 costs 9 times 32x32)
    cell        node 0 is the cell's input; node k (1..3) applies one op to one earlier node (node 1 to the input);
                the cell's output is the sum of nodes 1..3. DARTS gives each node two inputs and concatenates; one
                input and a sum keep every width a stage's own, so the width is searchable. With `cell_gate` the
                output is x + g * sum, g a learnable scalar per cell starting at 0 (ReZero, Bachlechner et al. 2020,
                arXiv:2003.04887): a path through every cell that does not depend on its ops, without which a
                single-path supernet (RandomOneShot) stays at chance here (results/fmnist-nas-comparison/
                README.md); the cell starts as the identity.
    head        ReLU, global average pool, dropout, linear (one logit per class, whatever the image size)

An architecture is a dict of labels -> chosen candidates, the form nni.nas exports (`formatter="dict"`):

    s{i}_width       a value of WIDTHS[i - 1]                        channels of stage i
    s{i}_depth       a value of DEPTHS                               cells in stage i
    s{i}_c{j}_op{k}  a key of OPS                                    the op of node k of cell j of stage i
    s{i}_c{j}_in{k}  [m], 0 <= m < k (k >= 2)                        the earlier node that node k reads

Labels of cells beyond a stage's depth may be present (nni samples every label) and are ignored.

    arch = sample_arch(random.Random(0))
    net = NasNet((1, 28, 28), 10, arch)               # normalised float images [N, 1, 28, 28] -> logits [N, 10]
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

import torch
from torch import nn

from .networks import scaled

STAGES = 3
NODES = 3                     # nodes per cell besides its input
WIDTHS = ((16, 24, 32), (32, 48, 64), (64, 96, 128))   # channels per stage (before width_mult)
DEPTHS = (1, 2, 3)            # cells per stage

# `layers` is the namespace that makes the parameterised layers (Conv2d, DilatedConv2d, BatchNorm2d, Linear): torch.nn
# here, nni's Mutable* layers in the search space (their widths can then be nni choices). Every op maps [N, C, H, W] to [N, C, H, W] (stride 1, same width).


def _conv_bn(layers, channels: int, kernel: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(), layers.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False),
                         layers.BatchNorm2d(channels))


class Float32DilatedConv2d(nn.Conv2d):
    """nn.Conv2d that runs in float32 on the CPU under bfloat16 autocast (elsewhere, or without autocast, it is
    nn.Conv2d). For the dilated depthwise convs of `dil_conv_*`: torch 2.14.1's CPU bfloat16 kernel gives a wrong
    weight gradient (relative error 1.2-1.8 against float32) for a depthwise conv with dilation 2 on 32x32 channels-last
    maps (16x16 maps, dilation 1 and contiguous tensors are right); a network with such an op then stayed at chance
    accuracy and its loss turned NaN (`python -m experiments.studies.bf16_ops`). Same parameters and
    state-dict keys as nn.Conv2d; input [N, C, H, W] of any float dtype, output float32 on that path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return super().forward(x.float())


def _dil_conv(layers, channels: int, kernel: int, dilation: int = 2) -> nn.Module:
    # DARTS' DilConv: ReLU, depthwise conv with dilation 2, pointwise conv, BN
    depthwise = layers.DilatedConv2d if dilation > 1 else layers.Conv2d
    return nn.Sequential(nn.ReLU(),
                         depthwise(channels, channels, kernel, padding=dilation * (kernel - 1) // 2,
                                   dilation=dilation, groups=channels, bias=False),
                         layers.Conv2d(channels, channels, 1, bias=False), layers.BatchNorm2d(channels))


def _sep_conv(layers, channels: int, kernel: int) -> nn.Module:
    # DARTS' SepConv: the depthwise-separable unit (dilation 1) twice
    return nn.Sequential(*_dil_conv(layers, channels, kernel, dilation=1), *_dil_conv(layers, channels, kernel, 1))


class Zero(nn.Module):
    """DARTS' `none` op: zeros of the input's shape and dtype (the node contributes nothing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


# DARTS' eight ops (Liu et al. 2019, its operations.py; `none` is `zero` here) and the plain ReLU-conv-BN 3x3 and 5x5
# of ENAS (Pham et al. 2018, arXiv:1802.03268) and NAS-Bench-201 (`nor_conv_3x3`; Dong & Yang 2020, arXiv:2001.00326)
OPS: dict[str, Callable[[Any, int], nn.Module]] = {
    "conv_3x3": lambda layers, c: _conv_bn(layers, c, 3),
    "conv_5x5": lambda layers, c: _conv_bn(layers, c, 5),
    "sep_conv_3x3": lambda layers, c: _sep_conv(layers, c, 3),
    "sep_conv_5x5": lambda layers, c: _sep_conv(layers, c, 5),
    "dil_conv_3x3": lambda layers, c: _dil_conv(layers, c, 3),
    "dil_conv_5x5": lambda layers, c: _dil_conv(layers, c, 5),
    "max_pool_3x3": lambda layers, c: nn.MaxPool2d(3, stride=1, padding=1),
    "avg_pool_3x3": lambda layers, c: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
    "skip_connect": lambda layers, c: nn.Identity(),
    "zero": lambda layers, c: Zero(),
}


class ArchError(ValueError):
    """An architecture dict the space does not contain; the message (one line) names the label and what it accepts."""


def width_label(stage: int) -> str:
    return f"s{stage}_width"


def depth_label(stage: int) -> str:
    return f"s{stage}_depth"


def op_label(stage: int, cell: int, node: int) -> str:
    return f"s{stage}_c{cell}_op{node}"


def input_label(stage: int, cell: int, node: int) -> str:
    return f"s{stage}_c{cell}_in{node}"


def is_op(label: str) -> bool:
    """Whether `label` names a node's op choice (its value: a key of OPS)."""
    return re.fullmatch(r"s\d+_c\d+_op\d+", label) is not None


def is_input(label: str) -> bool:
    """Whether `label` names a node's input choice (its value: [index of the earlier node])."""
    return re.fullmatch(r"s\d+_c\d+_in\d+", label) is not None


def space() -> dict[str, list]:
    """Every label of the space and its candidates, in build order: widths and depths (ints), ops (names of OPS),
    inputs (the indices of the earlier nodes; a chosen input is written [index], as nni exports it)."""
    out: dict[str, list] = {}
    for s in range(1, STAGES + 1):
        out[width_label(s)] = list(WIDTHS[s - 1])
        out[depth_label(s)] = list(DEPTHS)
        for c in range(1, max(DEPTHS) + 1):
            for k in range(1, NODES + 1):
                if k >= 2:
                    out[input_label(s, c, k)] = list(range(k))
                out[op_label(s, c, k)] = list(OPS)
    return out


def active_labels(depths: Mapping[int, int]) -> list[str]:
    """The labels a network with `depths` (stage -> cells) reads, in build order."""
    labels = []
    for s in range(1, STAGES + 1):
        labels += [width_label(s), depth_label(s)]
        for c in range(1, depths[s] + 1):
            for k in range(1, NODES + 1):
                labels += ([input_label(s, c, k)] if k >= 2 else []) + [op_label(s, c, k)]
    return labels


def _valid(candidates: list) -> str:
    return ", ".join(map(str, candidates))


def check_arch(arch: Any) -> dict[str, Any]:
    """The canonical form of an architecture dict: only the labels its depths make active, in build order, each input
    as [index]. Raises ArchError (one line) for a non-mapping, a label outside the space, a missing active label or a
    value that is not one of the label's candidates."""
    if not isinstance(arch, Mapping):
        raise ArchError(f"an architecture must be a mapping of labels to choices, got {type(arch).__name__}")
    choices = space()
    unknown = sorted(set(arch) - set(choices))
    if unknown:
        raise ArchError(f"unknown architecture label {unknown[0]!r}; labels are s<stage>_width, s<stage>_depth, "
                        f"s<stage>_c<cell>_op<node> and s<stage>_c<cell>_in<node> (stage 1-{STAGES}, cell "
                        f"1-{max(DEPTHS)}, node 1-{NODES}; inputs from node 2)")
    depths = {}
    for s in range(1, STAGES + 1):
        depths[s] = _value(arch, depth_label(s), choices)
    canonical = {label: _value(arch, label, choices) for label in active_labels(depths)}
    cell = dead_cell(canonical)
    if cell is not None:
        zeros = [label for label, value in canonical.items() if label.startswith(cell + "_op") and value == "zero"]
        raise ArchError(f"architecture cell {cell}: every path from its input to its output passes a 'zero' op "
                        f"({', '.join(zeros)}), so the network would give every image the same output and train to "
                        "chance accuracy; choose another op or another input for that cell")
    return canonical


def dead_cell(arch: Mapping[str, Any]) -> str | None:
    """The first active cell ("s<stage>_c<cell>") of a canonical architecture (check_arch's form) whose output
    cannot depend on its input, or None. A node is live when it reads a live node (node 0, the cell's input, is) with
    an op other than `zero`; a cell with no live node among 1..NODES outputs a constant (zeros, then a BatchNorm bias
    after the next conv), and so does the whole network, which trains to chance accuracy. Such cells exist because the
    space keeps DARTS' `none` op as a discrete choice (NAS-Bench-201's space has the same dead architectures, Dong &
    Yang 2020); check_arch refuses them, sample_arch does not draw them, and the multi-trial search's strategies run
    behind nni's Filter middleware with this rule (experiments/nas/multitrial.is_live)."""
    for s in range(1, STAGES + 1):
        for c in range(1, arch[depth_label(s)] + 1):
            live = [True]
            for k in range(1, NODES + 1):
                source = 0 if k == 1 else arch[input_label(s, c, k)][0]
                live.append(live[source] and arch[op_label(s, c, k)] != "zero")
            if not any(live[1:]):
                return f"s{s}_c{c}"
    return None


def _value(arch: Mapping, label: str, choices: dict[str, list]):
    if label not in arch:
        raise ArchError(f"architecture lacks label {label!r} (valid values: {_valid(choices[label])})")
    value = arch[label]
    if is_input(label):
        # nni exports an input choice as a list of the chosen indices: one here
        index = value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value
        if isinstance(index, bool) or not isinstance(index, int) or index not in choices[label]:
            raise ArchError(f"architecture label {label!r} has value {value!r}; valid values: "
                            f"{_valid([[i] for i in choices[label]])} (the earlier node it reads)")
        return [index]
    if isinstance(value, bool) or value not in choices[label]:
        raise ArchError(f"architecture label {label!r} has value {value!r}; valid values: {_valid(choices[label])}")
    return value


def sample_arch(rng: random.Random) -> dict[str, Any]:
    """A uniformly random architecture with every label of the space (as nni's samplers draw them), redrawn while
    check_arch refuses it (a dead cell, see dead_cell: rejection sampling, as the multi-trial search's Filter makes
    nni's strategies do)."""
    choices = space()
    while True:
        arch = {label: ([rng.choice(c)] if is_input(label) else rng.choice(c)) for label, c in choices.items()}
        try:
            check_arch(arch)
            return arch
        except ArchError:
            continue


def describe(arch: Mapping[str, Any]) -> str:
    """A one-line summary: each stage's width x depth, and how often each op is used by the active cells."""
    arch = check_arch(arch)
    stages = " | ".join(f"{arch[width_label(s)]}x{arch[depth_label(s)]}" for s in range(1, STAGES + 1))
    ops: dict[str, int] = {}
    for label, value in arch.items():
        if is_op(label):
            ops[value] = ops.get(value, 0) + 1
    return f"stages (width x cells) {stages}; ops " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))


# ---------------------------------------------------------------------------------------------------------------------
# Building: one code path for the plain network and the nni model space. A `choices` object answers each decision:
# FixedChoices (here) with the architecture's values and plain modules; experiments/nas/space.SearchChoices with nni's
# LayerChoice, InputChoice, Repeat and nni.choice. nni's freeze turns each of those into exactly what FixedChoices
# builds in its place (the chosen candidate, nn.Sequential of the first `depth` cells, a parameter-free input picker,
# plain Conv2d/BatchNorm2d/Linear), so the frozen space and NasNet have the same module names and state-dict keys.
# ---------------------------------------------------------------------------------------------------------------------


class ChosenInput(nn.Module):
    """Picks candidate `index` from a list of tensors (nni's ChosenInputs with one input, without nni)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, candidates: list[torch.Tensor]) -> torch.Tensor:
        return candidates[self.index]


class Choices(Protocol):
    """What the builder asks: `layers` makes Conv2d, DilatedConv2d, BatchNorm2d and Linear (their widths may be a
    `width` result); `width` and `repeat` give a stage's channels and its `depth` cells (`block(i)` builds cell i);
    `op` picks one of the named op builders; `input` returns a module that picks one of `n_candidates` tensors from a
    list."""
    layers: Any

    def width(self, label: str, values: Sequence[int]) -> Any: ...

    def repeat(self, label: str, values: Sequence[int], block: Callable[[int], nn.Module]) -> nn.Module: ...

    def op(self, label: str, builders: Mapping[str, Callable[[], nn.Module]]) -> nn.Module: ...

    def input(self, label: str, n_candidates: int) -> nn.Module: ...


class FixedChoices:
    """The decisions of one architecture (checked by check_arch), built as plain torch modules; widths times
    `width_mult`, rounded, at least 1."""
    layers = SimpleNamespace(Conv2d=nn.Conv2d, DilatedConv2d=Float32DilatedConv2d, BatchNorm2d=nn.BatchNorm2d,
                             Linear=nn.Linear)

    def __init__(self, arch: Mapping[str, Any], width_mult: float = 1.0):
        self.arch = check_arch(arch)
        self.width_mult = width_mult

    def width(self, label: str, values: Sequence[int]) -> int:
        return scaled(self.arch[label], self.width_mult)

    def repeat(self, label: str, values: Sequence[int], block: Callable[[int], nn.Module]) -> nn.Module:
        return nn.Sequential(*(block(i) for i in range(self.arch[label])))

    def op(self, label: str, builders: Mapping[str, Callable[[], nn.Module]]) -> nn.Module:
        return builders[self.arch[label]]()

    def input(self, label: str, n_candidates: int) -> nn.Module:
        return ChosenInput(self.arch[label][0])


class Cell(nn.Module):
    """NODES nodes; node k = op_k(one of nodes 0..k-1), node 0 the input; output = sum of nodes 1..NODES, or with
    `gate` x + g * that sum, g (`self.gate`, a float32 scalar parameter) starting at 0 (ReZero).
    [N, C, H, W] -> [N, C, H, W], C the stage's width."""

    def __init__(self, choices: Choices, width, stage: int, cell: int, gate: bool = False):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(())) if gate else None
        layers = choices.layers
        self.inputs = nn.ModuleList(choices.input(input_label(stage, cell, k), k) for k in range(2, NODES + 1))
        builders = {name: (lambda build=build: build(layers, width)) for name, build in OPS.items()}
        self.ops = nn.ModuleList(choices.op(op_label(stage, cell, k), builders) for k in range(1, NODES + 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for k, op in enumerate(self.ops):
            # an input choice takes the list of candidates (in a supernet it mixes them)
            nodes.append(op(x if k == 0 else self.inputs[k - 1](list(nodes))))
        out = nodes[1]
        for node in nodes[2:]:
            out = out + node
        return out if self.gate is None else x + self.gate * out


class Stage(nn.Module):
    """A reduction (stages after the first: ReLU, conv 3x3 stride 2, BN; halves the map rounding up) and `depth`
    cells."""

    def __init__(self, choices: Choices, in_width, width, stage: int, cell_gate: bool = False):
        super().__init__()
        layers = choices.layers
        self.reduce = nn.Identity() if stage == 1 else nn.Sequential(
            nn.ReLU(), layers.Conv2d(in_width, width, 3, stride=2, padding=1, bias=False), layers.BatchNorm2d(width))
        self.cells = choices.repeat(depth_label(stage), DEPTHS, lambda i: Cell(choices, width, stage, i + 1, cell_gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cells(self.reduce(x))


def build_into(net: nn.Module, choices: Choices, shape: Sequence[int], num_classes: int, dropout: float,
               cell_gate: bool = False) -> None:
    """Give `net` its stem, stages and head as `choices` decides (shared by NasNet and the nni model space);
    `cell_gate`: every cell gated (Cell)."""
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: expected (channels, height, width), got {tuple(shape)}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
    layers = choices.layers
    first = choices.width(width_label(1), WIDTHS[0])
    net.stem = nn.Sequential(layers.Conv2d(shape[0], first, 3, padding=1, bias=False), layers.BatchNorm2d(first))
    stages, width = [], first
    for s in range(1, STAGES + 1):
        in_width, width = width, first if s == 1 else choices.width(width_label(s), WIDTHS[s - 1])
        stages.append(Stage(choices, in_width, width, s, cell_gate))
    net.stages = nn.Sequential(*stages)
    net.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Dropout(dropout) if dropout else nn.Identity(), layers.Linear(width, num_classes))


class NasNet(nn.Module):
    """The network of one architecture of the space (module docstring), in plain torch.

    Args:
        shape: input (channels, height, width): (1, 28, 28), (3, 32, 32), or a folder's (1 or 3, 16..128,
            16..128); any channel count and size >= 1 works (the reductions round up).
        num_classes: logits.
        arch: labels -> choices (check_arch's rules; extra labels of inactive cells are ignored).
        width_mult: every stage width times this, rounded, at least 1 (1.0: the widths the architecture names).
        dropout: probability of dropping a pooled feature before the linear head (0 adds no layer).
        cell_gate: each cell's output x + g * (sum of its nodes), g a learnable scalar per cell starting at 0
            (ReZero, Bachlechner et al. 2020, arXiv:2003.04887): at initialisation every cell is the identity.

    Input: normalised float images [N, C, H, W] (any memory format). Output: logits [N, num_classes], same dtype.
    No data-dependent control flow: `torch.export.export` traces it.

    Raises:
        ArchError: an architecture outside the space (one line naming the label).
        ValueError: a bad shape or dropout.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, arch: Mapping[str, Any], width_mult: float = 1.0,
                 dropout: float = 0.0, cell_gate: bool = False):
        super().__init__()
        build_into(self, FixedChoices(arch, width_mult), shape, num_classes, dropout, cell_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
