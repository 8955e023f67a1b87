"""Image files as a viewer shows them, and as fixed-size uint8 arrays: the one place image files are decoded.

`open_as_viewed(path)` gives what an image viewer shows: the first frame, the EXIF orientation applied (a phone photo
stored sideways is turned upright), palettes expanded, 16/32-bit grey scaled to 8 bits, CMYK converted, transparency
composited over a background (white by default, as viewers show it); the result is mode "L" (a grey source) or "RGB".
`to_array(image, size, mode, channels, background)` resizes it to size x size keeping the aspect ratio (RESIZE_MODES)
and returns uint8 [C, size, size]. The folder datasets (trial/folder.py) and experiments/results/predict.py read
images through here; this module needs Pillow and numpy only, so predict.py stays free of torch-side project code.

A JPEG larger than Pillow's decompression-bomb limit (a 200-megapixel phone photo) is decoded at a reduced scale
(`Image.draft`, up to 1/8 per side, free in the JPEG decoder); any other image that large is refused in one line.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
WHITE = 255   # what a viewer shows behind transparent pixels
HIDDEN = ("thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r")   # system files beside images, besides dot-files
# Image.open reads only the header; it is done under this lock so that lifting Pillow's size limit (a module global)
# for one file never lets another thread's huge file through unchecked (folders are read with a thread pool)
_OPEN = threading.Lock()


class ImageError(ValueError):
    """A path that is not an image Pillow can read; the message is one line naming it."""


@functools.cache
@functools.cache
def image_extensions() -> frozenset[str]:
    """Lower-case file extensions of the formats Pillow can open (".png", ".jpg", ".jpeg", ".webp", ...). Computed
    once: a folder's walk asks for every file, and Pillow's registry does not change once initialised."""
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_hidden(name: str) -> bool:
    """A dot-file (.DS_Store, macOS's ._ resource forks) or a system file (Thumbs.db, desktop.ini): never an image."""
    return name.startswith(".") or name.lower() in HIDDEN


def is_image_name(name: str) -> bool:
    """Whether a file name has the extension of a format Pillow opens (any case: .JPG counts)."""
    return not is_hidden(name) and os.path.splitext(name)[1].lower() in image_extensions()


def _unreadable(path, err: BaseException) -> ImageError:
    reason = "not an image Pillow can read" if isinstance(err, UnidentifiedImageError) else \
        f"unreadable ({type(err).__name__}: {' '.join(str(err).split())})"
    return ImageError(f"{path}: {reason}; give a PNG, JPEG, BMP, GIF, TIFF or WebP file")


def _open(path, min_side: int) -> Image.Image:
    """Image.open, with a JPEG over the decompression-bomb limit opened at a reduced scale instead of refused."""
    with _OPEN:
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as err:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # the header only: no pixels yet
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            if image.format != "JPEG":
                image.close()
                raise ImageError(f"{path}: {image.size[0]}x{image.size[1]} pixels is over Pillow's decompression-"
                                 f"bomb limit and only a JPEG can be decoded at a reduced scale; resize it") from err
            image.draft(image.mode, (max(min_side, 1),) * 2)   # at most 1/8 per side, never below min_side
            if limit and image.size[0] * image.size[1] > 2 * limit:
                raise ImageError(f"{path}: {image.size[0]}x{image.size[1]} pixels even at 1/8 scale; resize "
                                 f"it") from err
            return image
    if min_side and image.format == "JPEG":
        image.draft(image.mode, (min_side, min_side))   # decode only as many pixels as the resize needs
    return image


def is_grey(image: Image.Image) -> bool:
    """Whether an image (opened, not necessarily loaded) holds grey values only: a grey mode, or a palette of greys."""
    if image.mode in GREY_MODES:
        return True
    if image.mode in ("P", "PA"):
        palette = image.getpalette() or []
        return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
    return False


def header(path: str | os.PathLike) -> tuple[int, int, str, bool]:
    """(width, height, mode, grey) from the file's header, without decoding its pixels (so with no size limit).
    Raises ImageError for a file Pillow cannot identify."""
    try:
        with _OPEN:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None   # a header holds no pixels
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with image:
            return image.size[0], image.size[1], image.mode, is_grey(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _unreadable(path, err) from None


def open_as_viewed(path: str | os.PathLike, background: int = WHITE, min_side: int = 0) -> Image.Image:
    """The image as a viewer shows it, decoded: first frame, EXIF orientation applied, transparency composited over
    `background` (0..255), in mode "L" (grey sources: L, 1, I;16, I, F, LA, grey palettes) or "RGB" (everything
    else: RGB, RGBA, colour palettes, CMYK, YCbCr, ...). With `min_side`, a JPEG may be decoded at a reduced scale
    that keeps both sides at least that long. Raises ImageError (one line naming the path) for anything else."""
    try:
        image = _open(path, min_side)
        image.seek(0)
        image.load()
        grey = is_grey(image)
        image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        if isinstance(err, ImageError):
            raise
        raise _unreadable(path, err) from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):   # 16/32-bit grey (or floats in 0..1) to 8 bits
        a = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if a.max(initial=0) <= 1 else 1.0
        else:
            scale = 255 / 65535 if a.max(initial=0) > 255 else 1.0   # 8-bit values in a 16-bit file: as they are
        image = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    target = "L" if grey else "RGB"
    alpha = image.mode in ("RGBA", "LA", "La", "PA", "RGBa") or (image.mode == "P" and "transparency" in image.info)
    if alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new(target, rgba.size, background if grey else (background,) * 3)
        canvas.paste(rgba.convert(target), mask=rgba.getchannel("A"))
        return canvas
    return image.convert(target)


def crop(image: Image.Image, size: int, background: int) -> Image.Image:
    """The shorter side to `size`, the longer cut about the centre: a size x size image, nothing padded."""
    return ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)


def pad(image: Image.Image, size: int, background: int) -> Image.Image:
    """The longer side to `size`, the shorter padded on both sides with `background`: the whole image kept."""
    fill = background if image.mode == "L" else (background,) * len(image.getbands())
    return ImageOps.pad(image, (size, size), Image.Resampling.LANCZOS, color=fill)


# resize_mode -> (image, size, background) -> size x size image, the aspect ratio kept
RESIZE_MODES = {"crop": crop, "pad": pad}


def to_array(image: Image.Image, size: int, mode: str, channels: int, background: int = WHITE) -> np.ndarray:
    """An image from open_as_viewed as uint8 [channels, size, size]: converted to grey (channels 1) or RGB (3), then
    resized as RESIZE_MODES[mode] says (unchanged when it is size x size already)."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = RESIZE_MODES[mode](image, size, background)
    return np.asarray(image, dtype=np.uint8).reshape(size, size, channels).transpose(2, 0, 1)


def read(path: str | Path, size: int, mode: str, channels: int, background: int = WHITE) -> np.ndarray:
    """One file as uint8 [channels, size, size] (open_as_viewed, then to_array). Raises ImageError."""
    try:
        return to_array(open_as_viewed(path, background, size), size, mode, channels, background)
    except (OSError, ValueError) as err:   # a file that opens but fails in the resize (truncated data, ...)
        if isinstance(err, ImageError):
            raise
        raise _unreadable(path, err) from None
