"""Score trained models on the test split, and export them for use without this project's code.

Metrics come from scikit-learn: accuracy, balanced accuracy, per-class precision/recall/F1, macro averages, the
confusion matrix and one-vs-rest ROC AUC. The export is a `torch.export` program (`model.pt2`) that takes raw pixel
values (float32, 0..255, [N, C, H, W]) and returns class probabilities, the same graph as ONNX (`model.onnx`, checked
against PyTorch with onnxruntime), plus `model_state.pt` (state dict + resolved config) and `model.json` (class names,
the input's layout, dtype, range and shape, the normalisation inside the graphs, how images are resized, and the ONNX
check); `experiments/results/predict.py` loads either with torch (or onnxruntime) and Pillow alone and makes any image
file the model's input the way training did.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trial import data as data_mod
from trial.config import TrialConfig, resolve
from trial.files import json_text, writable_dir, write_files
from trial.folder import FolderOptions
from trial.inference import infer
from trial.model import build_model


def load_checkpoint(path: str | Path) -> tuple[nn.Module, TrialConfig]:
    """(model in eval mode on the CPU, its config) from a best.pt that trial.train.save_run wrote (weights only:
    no pickled code runs). Raises OSError for a missing file, trial.config.ConfigError for a config this version
    does not accept."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = resolve(ckpt["config"])
    info = dataset_info(cfg)
    model = build_model(cfg, info.shape, len(info.classes))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), cfg


def dataset_info(cfg: TrialConfig) -> data_mod.DatasetInfo:
    """The DatasetInfo a config trained on: a table entry, or a dataset given by path under the config's keys
    (image_size, resize_mode, ...; from its cache, decoding the files when there is none). Raises DatasetError."""
    return data_mod.info(cfg.dataset, FolderOptions.of(cfg))


def predict_proba(model: nn.Module, x: torch.Tensor, amp: bool = False, tta: str = "none") -> np.ndarray:
    """Class probabilities, float32 [N, classes] as numpy, for normalised images x [N, C, H, W] on the model's
    device (trial.inference.infer with test-time augmentation `tta`, then softmax)."""
    return infer(model, x, amp, tta).softmax(1).cpu().numpy()


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, class_names) -> dict:
    """scikit-learn's metrics for labels y_true, int [N], and probabilities proba, float [N, K]: accuracy, balanced
    accuracy (the mean recall over the classes in y_true), macro precision/recall/F1, one-vs-rest ROC AUC (NaN when a
    class is absent from y_true), per-class precision, recall, F1 and support keyed by class name, and the confusion
    matrix (rows: true class, in the order of class_names)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )
    y_pred = proba.argmax(1)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    try:
        auc = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=labels))
    except ValueError:   # a class absent from y_true (tiny test sets): AUC is undefined
        auc = float("nan")
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)), "macro_precision": float(macro[0]),
            "macro_recall": float(macro[1]), "macro_f1": float(macro[2]), "roc_auc_ovr": auc,
            "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for name, p, r, f, s in zip(class_names, precision, recall, f1, support)},
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()}


class RawPixels(nn.Module):
    """Wraps a model so it takes raw pixel values and returns probabilities: the normalisation travels with it."""

    def __init__(self, model: nn.Module, info: data_mod.DatasetInfo):
        super().__init__()
        self.normalize = data_mod.Normalize(info)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x)).softmax(1)


def export_model(model: nn.Module, cfg: TrialConfig, out_dir: str | Path) -> Path:
    """Write `model` (trained with `cfg`) to out_dir as model.pt2 (a torch.export program: raw pixels float32
    [N, C, H, W], 0..255, in; probabilities float32 [N, classes] out; any batch size), model.onnx (the same program
    as ONNX: export_onnx), model_state.pt and model.json (model_meta, with the ONNX check: the largest absolute
    difference between onnxruntime's and PyTorch's probabilities on random images, also printed).
    The program carries no source stack traces (torch.export keeps them by default, with this machine's file paths).
    Each file is written whole or not at all, model.json last (trial.files.write_files). Returns out_dir; raises
    trial.files.OutputError (the path and the cause) when a file cannot be written, ImportError without onnx,
    onnxscript or onnxruntime (requirements.txt pins them)."""
    info = dataset_info(cfg)
    out = writable_dir(out_dir)   # before the export's work, not after it
    model = model.to("cpu").float()
    wrapped = RawPixels(model, info).eval()
    example = torch.zeros(2, *info.shape)
    program = torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    for node in program.graph.nodes:   # source stack traces name this machine's files; a shared model needs none
        node.meta.pop("stack_trace", None)
    program_bytes, state_bytes = io.BytesIO(), io.BytesIO()
    torch.export.save(program, program_bytes)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, state_bytes)
    onnx_bytes = export_onnx(program)
    check = onnx_check(onnx_bytes, wrapped, info.shape)
    print(f"[export] {out / 'model.onnx'}: onnxruntime {check['onnxruntime']} agrees with PyTorch within "
          f"{check['max_abs_diff']:.2g} (largest absolute difference of the probabilities, {check['images']} random "
          f"images)")
    write_files({out / "model.pt2": program_bytes.getvalue(), out / "model_state.pt": state_bytes.getvalue(),
                 out / "model.onnx": onnx_bytes, out / "model.json": json_text({**model_meta(cfg, info),
                                                                               "onnx": check})})
    return out


ONNX_INPUT, ONNX_OUTPUT = "pixels", "probabilities"   # the graph's input and output names


def export_onnx(program: torch.export.ExportedProgram) -> bytes:
    """`program` (export_model's: raw pixels in, probabilities out, dynamic batch) as a serialised ONNX model:
    torch.onnx.export's dynamo exporter (the default since torch 2.9; it translates the torch.export program itself,
    so the graph, normalisation and softmax included, is model.pt2's), with onnxscript's graph optimisation, opset
    torch chooses (20 with torch 2.14). Input `pixels` float32 [batch, C, H, W], output `probabilities` float32
    [batch, classes]; the batch axis is named "batch". Raises ImportError without onnx and onnxscript."""
    onnx_program = torch.onnx.export(program, dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                     verbose=False)
    proto = onnx_program.model_proto
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param   # torch.export's name, e.g. "s77"
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if symbol and dim.dim_param == symbol:
                dim.dim_param = "batch"
    return proto.SerializeToString()


def onnx_check(onnx_bytes: bytes, wrapped: nn.Module, shape, batches=(1, 7), seed: int = 0) -> dict:
    """Run the ONNX model with onnxruntime (CPU) and `wrapped` (a RawPixels module, eval mode, CPU) with PyTorch on the
    same random raw-pixel images, float32 uniform in [0, 255) of `shape` (C, H, W), in batches of `batches` sizes
    (1 and 7: neither is the export example's 2, so the dynamic batch axis is exercised). Returns what model.json
    records under "onnx": the file, input and output names, opset, versions, the image count and `max_abs_diff`, the
    largest absolute difference of the probabilities (float32 rounding: about 1e-7 for this project's families)."""
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    diff = 0.0
    for n in batches:
        x = torch.rand(n, *shape, generator=generator) * 255
        with torch.no_grad():
            want = wrapped(x).numpy()
        got = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
        diff = max(diff, float(np.abs(got - want).max()))
    import onnx
    opset = next(o.version for o in onnx.load_from_string(onnx_bytes).opset_import if o.domain in ("", "ai.onnx"))
    return {"file": "model.onnx", "input": ONNX_INPUT, "output": ONNX_OUTPUT, "opset": opset,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "images": sum(batches),
            "max_abs_diff": diff}


# how a table dataset's images were made, for images to be made the same way (predict.py's CONVENTIONS does it)
TABLE_RESIZE = {
    "mnist": "a digit: light strokes (255) on black (0), cropped to its ink, fitted into a 20x20 box keeping the "
             "aspect ratio and centred in 28x28 by its centre of mass (LeCun et al. 1998)",
    "fmnist": "an object: light on black (0), fitted into 28x28 keeping the aspect ratio, centred (Xiao et al. 2017)",
    "cifar10": "a photo: centre-cropped to a square, then resized (bilinear) to 32x32",
}


def model_meta(cfg: TrialConfig, info: data_mod.DatasetInfo) -> dict:
    """What model.json says: the input (layout NCHW, dtype float32, raw pixel values 0..255, channels and their
    colour, image size), the output, the classes in output order, the normalisation the graphs apply, how an image
    is resized to the input (for a dataset given by path, as predict.py makes an image file its input as training
    did: trial.images.to_array with image_size, resize_mode, channels, background). What an ONNX user needs besides
    model.onnx."""
    meta = {"dataset": cfg.dataset, "input_shape": list(info.shape), "classes": list(info.classes),
            "input": "float32 raw pixel values 0..255, [N, C, H, W]",
            "layout": "NCHW", "dtype": "float32", "value_range": [0, 255],
            "colour": "grey" if info.shape[0] == 1 else "RGB" if info.shape[0] == 3 else f"{info.shape[0]} channels",
            "channels": info.shape[0], "image_size": info.shape[1],
            "output": "float32 class probabilities, [N, classes] (softmax inside the graphs), in the order of classes",
            "normalisation": {"mean": list(info.mean), "std": list(info.std),
                              "note": "inside model.pt2 and model.onnx: (x / 255 - mean) / std per channel"}}
    if cfg.dataset in TABLE_RESIZE:
        meta["resize"] = TABLE_RESIZE[cfg.dataset]
    if info.from_path:
        meta.update({"resize_mode": cfg.resize_mode, "background": info.background,
                     "resize": f"read as a viewer shows the file (orientation, transparency over the background), "
                               f"{'grey' if info.shape[0] == 1 else 'RGB'}, resized to {info.shape[1]}x"
                               f"{info.shape[1]} keeping the aspect ratio ({cfg.resize_mode})"})
    return {**meta, "config": cfg.to_dict()}
