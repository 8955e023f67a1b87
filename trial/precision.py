"""When bfloat16 autocast cannot train a network on the data: a first epoch at chance, then float32.

bfloat16 keeps 8 bits of mantissa (float16 11, float32 24): a channel whose values are a large offset plus a small
spread is stored in steps of |offset| / 256, and where the spread is smaller than a few such steps what the channel
carries is rounding. Images that are mostly one flat colour make such channels: Chinese MNIST (white strokes on
black, 95% of the pixels at the background, 32x32) under airbench94's recipe trained in bfloat16 stayed at chance
accuracy (1/15) on 2 of 3 seeds, and even plain SGD at lr 0.05 learned the training batches while validation stayed at
chance; the same runs in float32 reached 0.96 to 0.99 validation accuracy in 2 epochs (results/bf16-chance). MNIST
shows the same narrow channels at initialisation and trains in bfloat16 all the same, so no measurement before the
first step tells the two apart (a gradient comparison on the first batch flagged both:
`python -m experiments.studies.bf16_chance gradients`).

What does tell them apart is the first validation: `at_chance` is true when the accuracy is no better than always
answering the most frequent class, by a margin of a quarter of one class's share. `trial.train` then restarts the run
in float32 from the start (same seed, same data, nothing reported yet) and says so in one line; final.json keeps the
reason in `amp_fallback`. Where float32's first epoch is at chance as well, bfloat16 was not the cause (a slow start:
torchvision's ResNet-18 on TrashNet's 1,617 training images at lr 0.1 is at chance after 13 steps either way), and
the epochs after the first train in bfloat16 again, so a slow starter pays one extra epoch, not float32's speed.
"""
from __future__ import annotations

import torch


def chance_accuracy(counts: torch.Tensor) -> float:
    """The accuracy of always answering the most frequent class, from the images per class `counts` (int [classes],
    e.g. torch.bincount of the labels): 1 / classes for balanced classes, the majority's share otherwise. Raises
    ValueError when there are no images."""
    if counts.sum() == 0:
        raise ValueError("counts: no images, no chance level")
    return counts.max().item() / counts.sum().item()


def at_chance(accuracy: float, counts: torch.Tensor) -> bool:
    """Whether `accuracy` (a fraction in [0, 1] on images whose per-class numbers are `counts`) is no better than
    chance: at most the majority class's share plus a quarter of one class's share of the rest,
    (1 - majority) / (4 * classes). For 15 balanced classes the bound is 0.0667 + 0.0156 = 0.082; for 2 balanced
    classes 0.5 + 0.0625 = 0.5625."""
    chance = chance_accuracy(counts)
    return accuracy <= chance + (1 - chance) / (4 * max(len(counts), 1))


def fallback_message(accuracy: float, counts: torch.Tensor) -> str:
    """The one line `trial.train` prints when it restarts a bfloat16 run in float32."""
    return (f"bfloat16 autocast off: after epoch 1 the validation accuracy {accuracy:.4f} is at chance "
            f"({chance_accuracy(counts):.4f}, the most frequent class's share), as where bfloat16 rounding "
            f"hides what the images carry (trial/precision.py); restarting in float32 (slower; amp false starts "
            f"there)")


def float32_too_message(accuracy: float) -> str:
    """The one line `trial.train` prints when the float32 restart's first epoch is at chance as well: bfloat16 was not
    the cause (a slow start: a low learning rate, a long warm-up, few steps an epoch), and the run goes on with
    bfloat16 from epoch 2; final.json keeps this line in `amp_check`."""
    return (f"float32's first epoch is at chance too ({accuracy:.4f}): not bfloat16's doing, a slow start; bfloat16 "
            f"autocast trains the epochs after it")
