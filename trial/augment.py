"""Augmentation as batched tensor ops on the training device: no per-image Python, no DataLoader workers.

28x28 sets: a random affine per image (shift, rotation, zoom) through one `affine_grid` + `grid_sample`.
CIFAR-10: a random crop from the reflect-padded image (as one gather) and a random horizontal flip.
Any dataset, on its own switch: cutout (a random square set to 0, the mean after normalisation).
Images arrive normalised, so the fill for pixels shifted in is the normalised background (the dataset table's
`background` pixel, through trial.data.background_fill), not 0. Which kind a dataset gets is its table entry's
`augmentation`. The magnitudes below are the usual ones for these datasets (shift/rotate/zoom as in Keras' MNIST
examples; pad-4 crop and flip as in He et al. 2016, "Deep Residual Learning", for CIFAR-10).

A dataset given by path (a user's folder, any side from 16 to 128 pixels) gets crops (`crop`, the default of such a
dataset: a translation keeps any image's class) and flips only where the config says `mirror_safe` (trial/config.py
refuses a mirror otherwise). Every magnitude in pixels (the affine shift, `crop_pad`, `cutout`) was chosen for the
benchmark sets' sides: on such a dataset it is scaled to its side (`scaled_pixels`), so that it moves or hides the same
share of the image: crop_pad 4 on a 64x64 image pads 8 pixels, as 4 of CIFAR-10's 32. The benchmark sets get them as
given.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .data import DatasetInfo, background_fill

if TYPE_CHECKING:
    from .config import TrialConfig

SHIFT_PX = 2.0        # max translation, pixels of a 28x28 image (the sets it was chosen for)
ROTATE_DEG = 10.0     # max rotation, degrees
ZOOM = 0.10           # scale drawn from [1 - ZOOM, 1 + ZOOM]
CROP_PAD = 4          # CIFAR-10 reflect padding before the random crop, pixels of a 32x32 image
AFFINE_SIDE = 28      # the image side SHIFT_PX was chosen for, pixels
CROP_SIDE = 32        # the image side crop_pad and cutout were chosen for (CIFAR-10), pixels


def scaled_pixels(value: float, ds: DatasetInfo, side: int) -> float:
    """A magnitude of `value` pixels, chosen for images `side` pixels wide, on dataset ds's images: as given for a
    benchmark set (the magnitudes were chosen for their sides), times ds's side / `side` for a dataset given by path."""
    return value * ds.shape[-1] / side if ds.from_path else value


def crop_pixels(pad: int, ds: DatasetInfo) -> int:
    """The reflect padding a crop of `pad` (the config's crop_pad) gets on ds's images: scaled_pixels, rounded, at
    least 1 where pad is, and less than the side (reflect padding needs that)."""
    if not pad:
        return 0
    return min(max(1, round(scaled_pixels(pad, ds, CROP_SIDE))), ds.shape[-1] - 1)


def affine(x: torch.Tensor, fill: torch.Tensor, generator: torch.Generator | None = None,
           shift: float | None = None) -> torch.Tensor:
    """Random shift (up to `shift` pixels, default SHIFT_PX), rotation (degrees) and zoom per image of x, float
    [N, C, H, W] -> the same shape and dtype; fill, float [C], is the (normalised) value of the background that pixels
    moved in from outside take."""
    n, _, h, w = x.shape
    shift = SHIFT_PX if shift is None else shift
    rand = torch.rand(n, 4, device=x.device, generator=generator) * 2 - 1
    angle = rand[:, 0] * math.radians(ROTATE_DEG)
    scale = 1 + rand[:, 1] * ZOOM
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, rand[:, 2] * shift * 2 / w], 1),
                         torch.stack([sin, cos, rand[:, 3] * shift * 2 / h], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    fill = fill.to(x.dtype).view(1, -1, 1, 1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int | None = None,
              flip: bool = True) -> torch.Tensor:
    """Random crop of the image reflect-padded by `pad` pixels (default CROP_PAD) and, when `flip`, a random
    horizontal flip, per image of x, float [N, C, H, W] -> the same shape and dtype (channels_last in memory)."""
    n, _, h, w = x.shape
    pad = CROP_PAD if pad is None else pad
    padded = F.pad(x, (pad,) * 4, mode="reflect") if pad else x
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device)[None] + offsets[:, :1])[:, :, None]     # [N, H, 1]
    cols = (torch.arange(w, device=x.device)[None] + offsets[:, 1:])[:, None, :]     # [N, 1, W]
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]     # [N, H, W, C]
    out = out.permute(0, 3, 1, 2)
    if not flip:
        return out
    flipped = torch.rand(n, device=x.device, generator=generator) < 0.5
    # the permuted gather is already channels_last in memory, the layout convolutions on a GPU want
    return torch.where(flipped[:, None, None, None], out.flip(3), out)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A `size` x `size` square (pixels; clipped at the border) set to 0 at a uniformly random centre in each image
    of x, float [N, C, H, W] -> a new tensor of the same shape and dtype (DeVries & Taylor 2017, "Improved
    Regularization of Convolutional Neural Networks with Cutout": centres anywhere in the image)."""
    n, _, h, w = x.shape
    centre = torch.rand(n, 2, device=x.device, generator=generator) * torch.tensor([h, w], device=x.device)
    top, left = (centre - size / 2).floor().unbind(1)
    rows = torch.arange(h, device=x.device)[None]
    cols = torch.arange(w, device=x.device)[None]
    inside = (((rows >= top[:, None]) & (rows < top[:, None] + size))[:, :, None]
              & ((cols >= left[:, None]) & (cols < left[:, None] + size))[:, None, :])     # [N, H, W]
    return x.masked_fill(inside[:, None], 0)


# kind (the dataset table's `augmentation`, or the config's) -> (images, dataset, crop padding) -> augmented images.
# "crop" translates only: for digits, which a mirror would change into another class or none, and for a dataset given
# by path unless it is mirror_safe.
AUGMENTATIONS = {
    "affine": lambda x, ds, pad: affine(x, background_fill(ds, x.device),
                                        shift=scaled_pixels(SHIFT_PX, ds, AFFINE_SIDE)),
    "crop_flip": lambda x, ds, pad: crop_flip(x, pad=crop_pixels(pad, ds)),
    "crop": lambda x, ds, pad: crop_flip(x, pad=crop_pixels(pad, ds), flip=False),
}


def augment(x: torch.Tensor, ds: DatasetInfo, crop_pad: int = CROP_PAD, kind: str = "dataset") -> torch.Tensor:
    """A batch x, normalised float [N, C, H, W] on any device, augmented by `kind` (a key of AUGMENTATIONS, or
    "dataset": the kind dataset `ds`'s table entry names); same shape and dtype. `crop_pad` in pixels of a 32x32
    image, scaled to a dataset given by path (crop_pixels). Raises KeyError for another kind."""
    return AUGMENTATIONS[ds.augmentation if kind == "dataset" else kind](x, ds, crop_pad)


def training_transform(cfg: TrialConfig, ds: DatasetInfo) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the training loop applies to each batch, from the config (`augment`, `augmentation`, `crop_pad`,
    `cutout`, the last two scaled to a dataset given by path): None when nothing is on. Validation and test images
    are never transformed (test-time augmentation is trial.inference's)."""
    square = max(1, round(scaled_pixels(cfg.cutout, ds, CROP_SIDE)))
    steps = ([lambda x: augment(x, ds, cfg.crop_pad, cfg.augmentation)] if cfg.augment else []) + \
        ([lambda x: cutout(x, square)] if cfg.cutout else [])
    if not steps:
        return None

    def transform(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x
    return transform
