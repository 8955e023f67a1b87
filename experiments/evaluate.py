"""Evaluate a trained checkpoint on the test split, and export it for use without this project's code.

Metrics come from scikit-learn: accuracy, per-class precision/recall/F1, macro averages, the confusion matrix and
one-vs-rest ROC AUC. The export is a `torch.export` program (`model.pt2`) that takes raw pixel values (float32, 0..255,
[N, C, H, W]) and returns class probabilities, plus `model_state.pt` (state dict + resolved config) and `model.json`
(class names, input shape); `experiments/predict.py` loads it with torch alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trial import data as data_mod
from trial.config import TrialConfig, resolve
from trial.model import build_model


def load_checkpoint(path: str | Path) -> tuple[nn.Module, TrialConfig]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = resolve(ckpt["config"])
    model = build_model(cfg, data_mod.INFO[cfg.dataset].shape)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> np.ndarray:
    """Class probabilities for normalised images x."""
    model.eval()
    return torch.cat([model(x[i:i + batch]).float().softmax(1) for i in range(0, len(x), batch)]).cpu().numpy()


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names) -> dict:
    from sklearn.metrics import (accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score)
    y_pred = proba.argmax(1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    try:
        auc = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))
    except ValueError:   # a class absent from y_true (tiny test sets): AUC is undefined
        auc = float("nan")
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_precision": float(macro[0]),
            "macro_recall": float(macro[1]), "macro_f1": float(macro[2]), "roc_auc_ovr": auc,
            "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for name, p, r, f, s in zip(class_names, precision, recall, f1, support)},
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


class RawPixels(nn.Module):
    """Wraps a model so it takes raw pixel values and returns probabilities: the normalisation travels with it."""

    def __init__(self, model: nn.Module, info: data_mod.DatasetInfo):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(info.mean).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(info.std).view(1, -1, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.float() - self.mean) / self.std).softmax(1)


def export_model(checkpoint: str | Path, out_dir: str | Path) -> Path:
    model, cfg = load_checkpoint(checkpoint)
    info = data_mod.INFO[cfg.dataset]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrapped = RawPixels(model, info).eval()
    example = torch.zeros(2, *info.shape)
    program = torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, out / "model.pt2")
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, out / "model_state.pt")
    (out / "model.json").write_text(json.dumps({"dataset": cfg.dataset, "input_shape": list(info.shape),
                                                "classes": list(info.classes), "input": "float32 raw pixel values 0..255, [N, C, H, W]",
                                                "config": cfg.to_dict()}, indent=2) + "\n")
    return out
