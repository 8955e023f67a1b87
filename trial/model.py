"""The CNN, built from a TrialConfig: one of four families, chosen by `family` and shaped by config keys, so a JSON
search space can search across and within them (nested choices).

- plain: conv blocks, then a dense head. A block is `convs_per_block` x (conv -> [batch norm] -> activation), then
  pooling while the map is larger than 1x1, then optional dropout (the studies this project grew from).
- residual: the CIFAR ResNet of He et al. 2016 (trial/networks.py): a stem conv, `conv_layers` stages of basic blocks
  (`blocks_<i>` deep, `filters_<i>` wide), identity or projection shortcuts, downsampling by stride or pooling.
- airbench: airbench94's network (trial/networks.py): a patch-whitening stem initialised from training images, then
  `conv_layers` conv-pool-norm-activation groups, a scaled linear head.
- nas: the cell network an architecture search chose (trial/nas_space.py), from the `nas_arch` dict of labels.
- resnet18: torchvision's ResNet-18 as it is, trained from scratch: the fixed hand design a user's own images are
  measured against (baselines/resnet18_torchvision.json); no key shapes it.
`width_mult` scales every family's channels. Every family takes 1 or 3 channels (any count), square images of any
side its downsampling allows (16..128 for a dataset given by path; trial/config.py refuses a config whose stages do not
fit the dataset's side, naming the key) and ends in one logit per class of the dataset. Names map to builders through
the dicts below, the single source of what exists (the config accepts exactly their keys).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .nas_space import NasNet
from .networks import AirbenchNet, ResidualNet, gelu, relu, scaled

if TYPE_CHECKING:
    from .config import TrialConfig

ACTIVATIONS = {
    "relu": relu,
    "leaky_relu": lambda c: nn.LeakyReLU(0.1, inplace=True),
    "prelu": lambda c: nn.PReLU(c),
    "gelu": gelu,
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


def build_model(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int | None = None) -> nn.Module:
    """The CNN `cfg` describes for images of `shape` (C, H, W; any C, any side the family's downsampling allows): it
    maps normalised float images [N, C, H, W] to logits [N, num_classes] (float32, or bfloat16 under autocast).
    `num_classes` None: the class count of cfg.dataset (the table's, or a dataset given by path's, read from its
    cache). Names come from FAMILIES, ACTIVATIONS, POOLS and HEADS; trial.config.resolve has checked them (a KeyError
    here means a config that did not go through it). Raises ValueError for a shape the architecture cannot take (e.g.
    more downsampling stages than the image allows; trial.config refuses those for the dataset's own size)."""
    if num_classes is None:
        from .data import info
        from .folder import FolderOptions
        num_classes = len(info(cfg.dataset, FolderOptions.of(cfg)).classes)
    return FAMILIES[cfg.family](cfg, shape, num_classes)


def plain_sides(side: int, blocks: int) -> list[int]:
    """The side of the square map each of `blocks` plain blocks sees, then the side after the last one: each block
    pools (halving, floor) while its map is larger than 1x1. 28, 5 blocks -> [28, 14, 7, 3, 1, 1]; 20, 4 blocks ->
    [20, 10, 5, 2, 1]; 96, 2 blocks -> [96, 48, 24] (a `flatten` head then has 24 * 24 * channels inputs)."""
    sides = [side]
    for _ in range(blocks):
        sides.append(sides[-1] // 2 if sides[-1] > 1 else sides[-1])
    return sides


def plain(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    act, pool = ACTIVATIONS[cfg.activation], POOLS[cfg.pool]
    channels, sides = shape[0], plain_sides(shape[1], cfg.conv_layers)
    layers: list[nn.Module] = []
    for width, k, size in zip((scaled(c, cfg.width_mult) for c in cfg.channels()), cfg.kernels(), sides):
        for _ in range(cfg.convs_per_block):
            layers.append(nn.Conv2d(channels, width, k, padding=k // 2, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(act(width))
            channels = width
        if size > 1:
            layers.append(pool(2))
        if cfg.conv_dropout:
            layers.append(nn.Dropout2d(cfg.conv_dropout))
    head, features = HEADS[cfg.head](channels, sides[-1])
    layers += head
    if cfg.dense_units:
        layers += [nn.Linear(features, cfg.dense_units), act(cfg.dense_units)]
        features = cfg.dense_units
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def residual(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int) -> ResidualNet:
    return ResidualNet(shape, num_classes, stem_width=cfg.stem_width or cfg.channels()[0], depths=cfg.depths(),
                       widths=cfg.channels(), downsample=cfg.downsample, shortcut=cfg.shortcut,
                       act=ACTIVATIONS[cfg.activation], dropout=cfg.dropout, width_mult=cfg.width_mult)


def airbench(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int) -> AirbenchNet:
    # batch-norm momentum 0.6 and the head's 1/9 scale are airbench94's constants (AirbenchNet's defaults)
    return AirbenchNet(shape, num_classes, widths=cfg.channels(), act=ACTIVATIONS[cfg.activation],
                       width_mult=cfg.width_mult)


def nas(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int) -> NasNet:
    return NasNet(shape, num_classes, cfg.nas_arch, width_mult=cfg.width_mult, dropout=cfg.dropout,
                  cell_gate=cfg.nas_cell_gate)


def resnet18(cfg: TrialConfig, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (He et al. 2016, the ImageNet design: 7x7 stride-2 stem, max pool, 4 stages of 2 basic
    blocks at 64..512 channels, global average pooling) with random weights, as `torchvision.models.resnet18(weights=
    None)` builds it. Only the stem's input channels follow the images (a grey dataset: a 1-channel 7x7 conv); any
    side from 16 px works (the stride-32 stack ends at 1x1 and the head pools it)."""
    from torchvision.models import resnet18 as tv_resnet18
    net = tv_resnet18(weights=None, num_classes=num_classes)
    if shape[0] != 3:
        net.conv1 = nn.Conv2d(shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


FAMILIES = {"plain": plain, "residual": residual, "airbench": airbench, "nas": nas, "resnet18": resnet18}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
