"""Classify image files with an exported model; needs torch and Pillow only, not this project's training code.

    python experiments/results/predict.py MODEL_DIR image.png [image2.jpg ...]

MODEL_DIR holds `model.pt2` and `model.json` (written by `experiments.results.evaluate.export_model`, or a report's
`model/`).
Images are converted to the model's channels (grayscale for MNIST/Fashion-MNIST, RGB for CIFAR-10) and resized to its
input size. Fashion-MNIST and MNIST were trained on light objects on a black background.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch


def load(model_dir: str | Path):
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    return torch.export.load(str(model_dir / "model.pt2")).module(), meta


def read_images(paths, shape) -> torch.Tensor:
    from PIL import Image
    channels, height, width = shape
    arrays = []
    for path in paths:
        image = Image.open(path).convert("L" if channels == 1 else "RGB").resize((width, height))
        a = np.asarray(image, dtype=np.uint8).reshape(height, width, channels).transpose(2, 0, 1)
        arrays.append(a)
    return torch.from_numpy(np.stack(arrays)).float()


@torch.no_grad()
def predict(model_dir, paths) -> list[tuple[str, str, float]]:
    model, meta = load(model_dir)
    proba = model(read_images(paths, meta["input_shape"]))
    best = proba.argmax(1)
    return [(str(p), meta["classes"][int(b)], float(proba[i, b])) for i, (p, b) in enumerate(zip(paths, best))]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path, label, confidence in predict(argv[0], argv[1:]):
        print(f"{path}\t{label}\t{confidence:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
