"""The CNN, built from a TrialConfig: conv blocks, then a dense head with 10 outputs.

A block is `convs_per_block` x (conv -> [batch norm] -> activation), then pooling while the map is larger than 1x1,
then optional dropout. Names map to builders through the dicts below; an unknown name is an error listing the valid
ones (the config checks first, these dicts are the single source of what exists).
"""
from __future__ import annotations

from torch import nn

from .config import TrialConfig

ACTIVATIONS = {
    "relu": lambda c: nn.ReLU(inplace=True),
    "leaky_relu": lambda c: nn.LeakyReLU(0.1, inplace=True),
    "prelu": lambda c: nn.PReLU(c),
    "gelu": lambda c: nn.GELU(),
    "silu": lambda c: nn.SiLU(inplace=True),
    "elu": lambda c: nn.ELU(inplace=True),
    "tanh": lambda c: nn.Tanh(),
    "sigmoid": lambda c: nn.Sigmoid(),
}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(table)}")
    return table[name]


def build_model(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int = 10) -> nn.Sequential:
    act = _lookup(ACTIVATIONS, "activation", cfg.activation)
    pool = _lookup(POOLS, "pool", cfg.pool)
    channels, size = shape[0], shape[1]
    layers: list[nn.Module] = []
    for width, k in zip(cfg.channels(), cfg.kernels()):
        for _ in range(cfg.convs_per_block):
            layers.append(nn.Conv2d(channels, width, k, padding=k // 2, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(act(width))
            channels = width
        if size > 1:
            layers.append(pool(2))
            size //= 2
        if cfg.conv_dropout:
            layers.append(nn.Dropout2d(cfg.conv_dropout))
    if cfg.head == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    else:
        layers.append(nn.Flatten())
        features = channels * size * size
    if cfg.dense_units:
        layers += [nn.Linear(features, cfg.dense_units), act(cfg.dense_units)]
        features = cfg.dense_units
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
