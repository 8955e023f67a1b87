"""Inference: the one batched path from images to logits, with optional test-time augmentation (TTA).

Validation during training, the test score at the end, retraining and the report's evaluation all call `infer`, so a
model is scored the same way everywhere; the tuner still sees validation only. TTA averages the logits of views of
each image and changes only how a trained model is scored, never the training data: "mirror" and "mirror_translate"
(airbench94's levels 1 and 2) for classes a mirror keeps, "translate" (level 2 without the mirror) for any.

    logits = infer(model, x, amp=False, tta="mirror_translate")      # float32 [N, classes]
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 1024   # images per forward pass


def _mirror(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x) + model(x.flip(-1)))


def _mirror_translate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # airbench94's level 2 (KellerJordan/cifar10-airbench, legacy/airbench94.py, infer_mirror_translate): the mirror
    # average, averaged with that of the image shifted one pixel up-left and one down-right (reflect padding)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (_mirror(model, padded[..., :h, :w]) + _mirror(model, padded[..., 2:h + 2, 2:w + 2]))
    return 0.5 * (_mirror(model, x) + shifted)


def _translate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # airbench94's level 2 without its mirror, for classes a mirror changes (digits, text): the image's logits averaged
    # with the mean of those of the image shifted one pixel up-left and one down-right (reflect padding)
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = 0.5 * (model(padded[..., :h, :w]) + model(padded[..., 2:h + 2, 2:w + 2]))
    return 0.5 * (model(x) + shifted)


# name -> (model, images [B, C, H, W]) -> logits [B, classes]
TTA: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "none": lambda model, x: model(x),
    "mirror": _mirror,
    "mirror_translate": _mirror_translate,
    "translate": _translate,
}


@torch.no_grad()
def infer(model: nn.Module, x: torch.Tensor, amp: bool = False, tta: str = "none",
          batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of `model` in eval mode for normalised images x, float [N, C, H, W] on the model's device, computed
    `batch_size` images at a time, bfloat16 autocast when `amp`, averaged over the views of `tta` (a key of TTA):
    float32 [N, classes] on that device. KeyError for an unknown `tta` (trial.config checks it first)."""
    view = TTA[tta]
    model.eval()
    outputs = []
    for i in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            outputs.append(view(model, x[i:i + batch_size]).float())
    return torch.cat(outputs)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable, amp: bool = False,
             tta: str = "none") -> dict:
    """Mean loss and accuracy (fractions, floats) over a whole split: images x [N, C, H, W], int64 labels y [N]."""
    logits = infer(model, x, amp, tta)
    return {"loss": float(loss(logits, y)), "accuracy": float((logits.argmax(1) == y).float().mean())}
