"""The CNN, built from a TrialConfig: conv blocks, then a dense head with 10 outputs.

A block is `convs_per_block` x (conv -> [batch norm] -> activation), then pooling while the map is larger than 1x1,
then optional dropout. Names map to builders through the dicts below; an unknown name is an error listing the valid
ones (the config checks first, these dicts are the single source of what exists).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
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
# (channels, side of the last map) -> (layers that turn the map into a vector, its length)
HEADS = {
    "flatten": lambda c, size: ([nn.Flatten()], c * size * size),
    "gap": lambda c, size: ([nn.AdaptiveAvgPool2d(1), nn.Flatten()], c),   # global average pooling
}


def build_model(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int = 10) -> nn.Sequential:
    """The CNN `cfg` describes for images of `shape` (C, H, W): it maps normalised float images [N, C, H, W] to
    logits [N, num_classes] (float32, or bfloat16 under autocast). Names come from ACTIVATIONS, POOLS and HEADS;
    trial.config.resolve has checked them (a KeyError here means a config that did not go through it)."""
    act, pool = ACTIVATIONS[cfg.activation], POOLS[cfg.pool]
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
    head, features = HEADS[cfg.head](channels, size)
    layers += head
    if cfg.dense_units:
        layers += [nn.Linear(features, cfg.dense_units), act(cfg.dense_units)]
        features = cfg.dense_units
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
