"""Classify image files with an exported model; needs torch and Pillow only, not this project's training code.

    python experiments/results/predict.py MODEL_DIR image.png [image2.jpg ...]
    python experiments/results/predict.py MODEL_DIR image.png --runtime onnx     # model.onnx with onnxruntime

MODEL_DIR holds `model.pt2`, `model.onnx` and `model.json` (written by `experiments.results.evaluate.export_model`, or
a report's `model/`). `--runtime torch` (the default) runs model.pt2 with torch, `onnx` runs model.onnx with
onnxruntime (the same graph: the export checked that their probabilities agree, model.json's onnx.max_abs_diff), `auto`
the ONNX model where onnxruntime is installed and the folder has one, else torch. Each file is classified as an image viewer shows it, in the convention the model was trained on:
- what the file carries besides its pixels, as Pillow reads it: the EXIF orientation tag (a phone photo stored
  sideways is turned upright), palettes, CMYK, 16-bit grey, transparency (composited over white, as viewers show it),
  the first frame of an animation;
- the model's channels (grey for MNIST/Fashion-MNIST, RGB for CIFAR-10);
- MNIST and Fashion-MNIST were trained on light strokes on a dark background: a picture with a light background
  (ink on paper) is inverted, and the line says so;
- an image already of the model's size and convention goes in unchanged; otherwise the aspect ratio is kept: for
  MNIST the drawing is cropped to its ink, fitted into a 20x20 box and centred in 28x28 by its centre of mass (how
  MNIST's digits were made: LeCun et al. 1998); for Fashion-MNIST the object is fitted into 28x28; for CIFAR-10 the
  photo is cropped about its centre to a square, then resized;
- a model trained on a dataset given by path (a folder of images, a CSV manifest, an .npz) says in model.json how its
  images were made (image_size, resize_mode, channels, background): any image file, of any size, is read and resized
  exactly so (trial/images.py's open_as_viewed and to_array, the code that decoded the training images).
A path that is not an image Pillow can read gets one `error:` line; the others are still classified (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

if __package__:
    from trial import images as _images  # one image reader for training data and this
    from trial.images import ImageError, open_as_viewed
else:   # run as a script, with torch and Pillow only: trial/images.py (Pillow and numpy) read as a lone file, so
    # that neither the trial package nor the training code is imported
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "cnnsearch_images", Path(__file__).resolve().parents[2] / "trial" / "images.py")
    _images = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _images
    _spec.loader.exec_module(_images)
    ImageError, open_as_viewed = _images.ImageError, _images.open_as_viewed

# How each dataset's images were made, for pictures to be made the same way (keyed by model.json's "dataset"): background pixel value (None: photos,
# full frame), the side of the box the drawing is fitted into, and how it is centred in the frame. MNIST: size-
# normalised into 20x20, centred by its centre of mass (LeCun et al. 1998, "Gradient-based learning applied to
# document recognition", and the MNIST page); Fashion-MNIST: longest side resized to 28, centred (Xiao et al. 2017).
CONVENTIONS = {"mnist": (0, 20, "mass"), "fmnist": (0, 28, "box"), "cifar10": (None, None, None)}


RUNTIMES = ("torch", "onnx", "auto")


def load(model_dir: str | Path, runtime: str = "torch"):
    """(model, model.json as a dict) of an exported folder: the model maps raw pixel values, float32 [N, C, H, W]
    0..255, to class probabilities, float32 [N, classes], as torch tensors. `runtime` (a key of RUNTIMES): "torch"
    runs model.pt2 (torch.export.load), "onnx" model.onnx with onnxruntime's CPU provider, "auto" the ONNX model where
    onnxruntime imports and model.onnx exists, else torch. Raises OSError for a missing file, ImportError for
    runtime "onnx" without onnxruntime."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    if runtime == "auto":
        try:
            import onnxruntime  # noqa: F401
            runtime = "onnx" if (model_dir / "model.onnx").is_file() else "torch"
        except ImportError:
            runtime = "torch"
    if runtime == "torch":
        return torch.export.load(str(model_dir / "model.pt2")).module(), meta
    import onnxruntime
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy().astype(np.float32)})[0])
    return model, meta


def _as_viewed(path: str | Path, background: int = 255):
    """The image as a viewer shows it (trial.images.open_as_viewed: first frame, orientation applied, transparency
    over `background`, white by default), as RGB."""
    return open_as_viewed(path, background=background).convert("RGB")


def read_image(path: str | Path, shape, dataset: str, meta: dict | None = None) -> tuple[np.ndarray, str]:
    """One file as the model's input: uint8 [C, H, W] (shape = (C, H, W)) and a note of what was converted ("" when
    nothing worth saying). `meta`, a model.json with a resize_mode (a dataset given by path), makes it as training
    made its images (trial.images.to_array). Raises ImageError for a path that is not a readable image."""
    from PIL import Image, ImageOps
    channels, height, width = shape
    if meta and "resize_mode" in meta:   # a folder dataset's model: read as trial/folder.py read its training images
        # (open_as_viewed, then to_array: the same orientation, transparency, channels and aspect-ratio resize)
        return _images.read(path, height, meta["resize_mode"], channels, meta.get("background", _images.WHITE)), ""
    background, content_side, centring = CONVENTIONS.get(dataset, (None, None, "box"))
    content_side = content_side or min(height, width)
    notes = []
    image = _viewed_against_strokes(path, notes)
    if channels == 1 and image.mode == "RGB" and _colourful(image):
        image = _strokes_by_colour(image, notes)
    image = image.convert("L") if channels == 1 else image
    if background is None:                      # photos: keep the aspect ratio by a centred square crop
        return np.asarray(ImageOps.fit(image, (width, height), Image.BILINEAR), dtype=np.uint8
                          ).reshape(height, width, channels).transpose(2, 0, 1), ""
    a = np.asarray(image, dtype=np.uint8)
    border = np.concatenate([a[0].ravel(), a[-1].ravel(), a[:, 0].ravel(), a[:, -1].ravel()])
    if abs(float(np.median(border)) - (255 - background)) < abs(float(np.median(border)) - background):
        a = 255 - a
        notes.append(f"inverted: {dataset} was trained on light strokes on a dark background")
    elif image.size == (width, height):         # already in the model's own format (e.g. a test image): as it is
        return a.reshape(height, width, channels).transpose(2, 0, 1).copy(), "; ".join(notes)
    ink = np.abs(a.astype(np.int16) - background)
    ink = ink.max(axis=-1) if ink.ndim == 3 else ink
    rows, cols = np.nonzero(ink > 32)
    if len(rows):                               # crop to the drawing, keep its aspect ratio inside the box
        a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    fill = (background,) * (3 if a.ndim == 3 else 1)
    crop = Image.fromarray(a)
    scale = content_side / max(crop.size)
    crop = crop.resize((max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))), Image.LANCZOS)
    canvas = Image.new(crop.mode, (width, height), fill if len(fill) > 1 else fill[0])
    left, top = (width - crop.size[0]) // 2, (height - crop.size[1]) // 2
    if centring == "mass":                      # move the ink's centre of mass to the frame's centre
        weight = np.abs(np.asarray(crop, dtype=np.float64) - background)
        weight = weight.sum(-1) if weight.ndim == 3 else weight
        if weight.sum() > 0:
            ys, xs = np.indices(weight.shape)
            cy, cx = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
            left = int(np.clip(round(width / 2 - cx - 0.5), 0, width - crop.size[0]))
            top = int(np.clip(round(height / 2 - cy - 0.5), 0, height - crop.size[1]))
    canvas.paste(crop, (left, top))
    out = np.asarray(canvas, dtype=np.uint8).reshape(height, width, channels).transpose(2, 0, 1)
    return out, "; ".join(notes)


def _viewed_against_strokes(path, notes: list):
    """The image as viewed; one with transparency is composited over black or white, whichever its opaque pixels
    stand out from (white ink on a transparent canvas, what inverting a drawing gives, would vanish over white)."""
    from PIL import Image
    try:
        with Image.open(path) as raw:
            transparent = raw.mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in raw.info
    except Exception:   # not an image, or unreadable: _as_viewed says so in one line (ImageError)
        transparent = False
    if not transparent:
        return _as_viewed(path)
    over = {bg: _as_viewed(path, background=bg) for bg in (255, 0)}
    spread = {bg: float(np.asarray(im.convert("L"), dtype=np.float32).std()) for bg, im in over.items()}
    if spread[0] > spread[255]:
        notes.append("transparent: composited over black, where its strokes show")
        return over[0]
    return over[255]


def _colourful(image) -> bool:
    """Whether an RGB image has colour (not grey stored as RGB): mean spread between its channels above 24 of 255."""
    a = np.asarray(image.resize((64, 64)), dtype=np.int16)
    return float((a.max(-1) - a.min(-1)).mean()) > 24


def _strokes_by_colour(image, notes: list):
    """A coloured drawing (chalk on a green board, blue ink on cream) -> grey strokes by their colour distance from
    the background's colour (the median of the border), light on dark as MNIST's convention has them."""
    from PIL import Image
    a = np.asarray(image, dtype=np.float32)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    distance = np.linalg.norm(a - np.median(border, axis=0), axis=-1)
    top = max(float(np.percentile(distance, 99.5)), 1.0)
    notes.append("colour: strokes told from the background by colour, drawn light on dark")
    return Image.fromarray(np.clip(distance / top * 255, 0, 255).astype(np.uint8), "L")


def read_images(paths, shape, dataset: str = "", meta: dict | None = None) -> torch.Tensor:
    """Files as one float32 batch of raw pixel values [N, C, H, W] (0..255), each read by read_image."""
    return torch.from_numpy(np.stack([read_image(p, shape, dataset, meta)[0] for p in paths])).float()


def _in_folders(paths) -> tuple[list, list[str]]:
    """The paths that are not folders, and one error line per folder, saying how to give its images: before, a folder
    was 'unreadable (IsADirectoryError ...); give a PNG, JPEG ...'."""
    errors = [f"{path}: a folder, not an image; give the images in it (e.g. {Path(path) / '*.png'})"
              for path in paths if Path(path).is_dir()]
    return [path for path in paths if not Path(path).is_dir()], errors


@torch.no_grad()
def predict(model_dir, paths, runtime: str = "torch") -> tuple[list[tuple[str, str, float, str]], list[str]]:
    """Classify the files, each read once, with the model `runtime` runs (see load): ((path, class, probability, note)
    per readable image, one error line per path that is not a readable image)."""
    model, meta = load(model_dir, runtime)
    paths, errors = _in_folders(paths)
    read = []
    for path in paths:
        try:
            read.append((path, *read_image(path, meta["input_shape"], meta["dataset"], meta)))
        except ImageError as err:
            errors.append(str(err))
    if not read:
        return [], errors
    proba = model(torch.from_numpy(np.stack([image for _, image, _ in read])).float())
    best = proba.argmax(1)
    return [(str(path), meta["classes"][int(b)], float(proba[i, b]), note)
            for i, ((path, _, note), b) in enumerate(zip(read, best))], errors


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len([a for a in argv if not a.startswith("--runtime")]) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("paths", nargs="+")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch",
                   help="torch: model.pt2 (default); onnx: model.onnx with onnxruntime; auto: onnx where possible")
    args = p.parse_args(argv)
    model_dir, paths = args.model_dir, args.paths
    if not (Path(model_dir) / "model.json").is_file():
        print(f"error: {model_dir} holds no model.json/model.pt2 (an export_model folder or a report's model/)",
              file=sys.stderr)
        return 2
    if args.runtime == "onnx" and not (Path(model_dir) / "model.onnx").is_file():
        print(f"error: {model_dir} holds no model.onnx (exported before ONNX export existed: export it again, or use "
              f"--runtime torch)", file=sys.stderr)
        return 2
    rows, errors = predict(model_dir, paths, args.runtime)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    for path, label, confidence, note in rows:
        print(f"{path}\t{label}\t{confidence:.4f}" + (f"\t({note})" if note else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
