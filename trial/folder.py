"""Datasets given by path: a folder of images, a CSV manifest or an .npz file, audited, then decoded once into the
uint8 tensor cache trial/data.py keeps, with splits that never move. `--dataset PATH` goes wherever a dataset name goes.

Layouts:
  <root>/train/<class>/...  [+ <root>/val/<class>/... and/or <root>/test/<class>/...]   torchvision's ImageFolder
  <root>/<class>/...        no split given                                            (val: also valid, validation)
  <file>.csv                a manifest: an image path column (path, file, filename, image, ...; relative to the CSV),
                            a label column (label, class, target, ...), optionally a split column (train/val/test)
  <file>.npz                x: uint8 [N, H, W] or [N, H, W, C], y: labels; optionally x_test/y_test, x_val/y_val
Files in subfolders of a class folder belong to that class. Hidden and system files (.DS_Store, Thumbs.db) and files
whose extension is not an image format Pillow opens are ignored and counted. Class names are the folder names or
labels, sorted as ImageFolder sorts them (numerically when every label is an integer).

Images are read as a viewer shows them (trial/images.py), grey when every image is grey (1 channel) else RGB, and
resized once to `image_size` keeping the aspect ratio (`resize_mode` "crop" or "pad"); when image_size is 0 it is the
median shorter side clamped to AUTO_SIDE and rounded to a multiple of 4. Mean and std come from the training images.

Splits never move: without a test split, a stratified TEST_SEED draw of `test_fraction` of the images is written as a
file list beside the cache (cache_dir()/folder-*.split.json) and read back by every later trial, retraining and
report; images added later go to training. Validation is drawn from training, stratified, with the config's
`split_seed` (carve_validation). Exact duplicates (same file bytes) are kept on one side of every split drawn here.

The audit (`audit(path) -> Audit`) runs before anything is cached and refuses, in one line, what would make a result
wrong: files that do not decode (unless skip_bad_images), the same image in two splits (unless drop_duplicates), a
class with too few images for the splits, fewer than two classes.

Memory. The decode writes every image into one uint8 array [N, C, S, S] (N*C*S*S bytes, e.g. 737 MB for 60,000
64x64 RGB images), saved with torch.save; a later trial maps that file (torch.load(mmap=True)) instead of reading it,
so it "loads" in milliseconds whatever its size and concurrent trials share one copy in the page cache (reading it
took 0.4-0.7 s per 737 MB on the 2-core AMD EPYC VM, avx2 and avx512_bf16, each trial holding a private copy:
results/folder-decode). A mapped cache alone would not let a cache
larger than memory train: trial.data.prepare holds the images it trains on as float32, 4 bytes a value, so a trial
needs about 4x the images it uses (training_memory). Hence refusals, in one line with the figures and the fix, never
the kernel's silent OOM kill: before decoding when the uint8 images would not fit in the memory available now
(decode_memory_problem: the audit's problem, naming an image_size that fits), and in prepare on the CPU when the
float32 copies would not (check_training_memory: naming a train_subset that fits). Both compare with psutil's
available memory less MEMORY_RESERVE, at that moment: trials starting together each see the memory the others are
about to take. Training batch by batch from the mapped uint8 cache would lift the float32 limit; that is the training
loop's change to make, not this module's.

    python -m trial.data path/to/images          # the audit: counts per class and split, sizes, modes, problems
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from . import images
from .data import LABEL_COLUMNS, DatasetError, DatasetInfo, Splits, cache_dir, cache_lock

FOLDER_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}   # folder names and manifest split values
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path", "img",
                "image_file")   # header names taken as a manifest's image path column (any case), first match wins
MANIFEST_LABELS = (*LABEL_COLUMNS, "category")
SPLIT_COLUMNS = ("split", "subset", "set", "partition")
TEST_SEED = 12345         # the draw of a test split that is not given: fixed, so every machine draws the same one
VAL_FRACTION = 0.2        # validation drawn from training is at most this share of it (val_size is a cap)
AUTO_SIDE = (16, 128)     # image_size 0: the median shorter side clamped to this, pixels (CPU-friendly)
IMBALANCE_FLAG = 1.5      # largest / smallest class above this: lead reports with balanced accuracy
BACKGROUND = images.WHITE  # behind transparent pixels and in resize_mode "pad"'s bars: what a viewer shows
SHOWN = 5                 # files named in one line before "and N more"
MEMORY_RESERVE = 512 * 2 ** 20   # bytes the memory checks leave free (interpreter, torch, the OS, a batch)
FLOAT_BYTES = 4           # a trial holds its images as float32 (trial.data.normalise)
TRAINING_HEADROOM = 1.3   # prepare's peak RSS growth over the bytes counted below, measured: 1.25x for 60,000 64x64 RGB
                          # images, 1.28x for 20,000 (the mapped cache's pages, imports, the allocator)


@dataclass(frozen=True)
class FolderOptions:
    """The config keys that shape a dataset given by path (TrialConfig has the same names and defaults)."""
    image_size: int = 0            # pixels, 0 = from the audit
    resize_mode: str = "crop"      # a key of trial.images.RESIZE_MODES
    test_fraction: float = 0.2     # share of the images held out as test when no test split is given
    skip_bad_images: bool = False  # train without files that do not decode instead of refusing
    drop_duplicates: bool = False  # keep one copy of each exact duplicate instead of refusing leakage
    mirror_safe: bool = False      # a horizontal mirror keeps every image's class

    @classmethod
    def of(cls, config) -> FolderOptions:
        """The options a TrialConfig (or anything with these attributes) holds."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def data_key(self) -> str:
        """The options that change the decoded tensors (mirror_safe does not)."""
        return f"{self.image_size}:{self.resize_mode}:{self.test_fraction!r}:{self.skip_bad_images}:" \
               f"{self.drop_duplicates}"


@dataclass
class Entry:
    """One image: `name` is its path relative to the dataset root (or the manifest's folder; "x[12]" in an .npz)."""
    name: str
    label: str
    split: str                 # "train", "val", "test" as the layout gives it ("train" when none is given)
    path: str | Path | None = None   # None for an .npz row (a str for a folder's files: cheaper to walk)
    stat: str = ""             # size and mtime: what keys the cache
    digest: str = ""           # hash of the file's bytes (or the array's)
    width: int = 0
    height: int = 0
    mode: str = ""
    grey: bool = True
    error: str = ""            # why it cannot be used ("" when it can)


@dataclass
class Scan:
    """What a walk over the dataset found, without reading any image: the candidate images and what was ignored."""
    root: Path
    layout: str
    entries: list[Entry]
    hidden: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)   # files or folders in no class folder
    empty_classes: list[str] = field(default_factory=list)   # class folders of training with no image
    sources: list[Path] = field(default_factory=list)   # the manifest or .npz itself

    @property
    def test_given(self) -> bool:
        return any(e.split == "test" for e in self.entries)

    @property
    def val_given(self) -> bool:
        return any(e.split == "val" for e in self.entries)


@dataclass
class Audit:
    """What is in a dataset given by path and what would go wrong training on it; `problems` are refusals."""
    dataset: str
    layout: str
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)   # split -> class -> images used
    test_split: str = ""
    val_split: str = ""
    shorter_side: tuple[int, int, int] = (0, 0, 0)   # min, median, max, pixels
    longer_side: tuple[int, int, int] = (0, 0, 0)
    modes: dict[str, int] = field(default_factory=dict)
    image_size: int = 0
    image_size_note: str = ""
    resize_mode: str = "crop"
    channels: int = 0
    hidden: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)          # "name: reason" of files that do not decode
    skipped_images: int = 0                               # of those, left out (skip_bad_images)
    duplicates_across: list[list[str]] = field(default_factory=list)   # the same bytes in two splits: leakage
    duplicates_within: list[list[str]] = field(default_factory=list)   # the same bytes twice in one class
    conflicting: list[list[str]] = field(default_factory=list)         # the same bytes under two classes
    dropped_duplicates: int = 0
    small_classes: dict[str, int] = field(default_factory=dict)       # classes with 0 or 1 image
    imbalance: float = 1.0                               # largest / smallest class of the training split
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def imbalanced(self) -> bool:
        return self.imbalance > IMBALANCE_FLAG

    def lines(self) -> list[str]:
        """The audit as text, one finding a line, the refusals last (each starting "PROBLEM:")."""
        total = sum(sum(c.values()) for c in self.counts.values())
        out = [f"{self.dataset}: {self.layout}, {len(self.classes)} classes, {total} images used"]
        width = max([5, *(len(c) for c in self.classes)])
        out.append(f"  {'class':<{width}} " + " ".join(f"{s:>6}" for s in SPLITS))
        for c in self.classes:
            out.append(f"  {c:<{width}} " + " ".join(f"{self.counts.get(s, {}).get(c, 0):>6}" for s in SPLITS))
        out.append(f"  test: {self.test_split}")
        out.append(f"  validation: {self.val_split}")
        out.append(f"  sizes: shorter side {'/'.join(map(str, self.shorter_side))}, longer side "
                   f"{'/'.join(map(str, self.longer_side))} px (min/median/max)")
        out.append("  modes: " + ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items())))
        out.append(f"  decoded as: {self.image_size}x{self.image_size}, {self.channels} channel"
                   f"{'s (RGB)' if self.channels == 3 else ' (grey)'}, resize_mode {self.resize_mode!r}"
                   + (f"; {self.image_size_note}" if self.image_size_note else ""))
        if self.hidden or self.not_images or self.outside:
            kinds = _by_extension(self.not_images)
            out.append(f"  ignored: {len(self.hidden)} hidden/system files{_some(self.hidden)}, "
                       f"{len(self.not_images)} not images{f' ({kinds})' if kinds else ''}, "
                       f"{len(self.outside)} outside any class folder{_some(self.outside)}")
        if self.bad:
            out.append(f"  do not decode: {len(self.bad)}"
                       + (" (skipped: skip_bad_images; counted in final.json)" if self.skipped_images else "")
                       + f": {_some(self.bad, bare=True)}")
        for title, groups in (("duplicates across splits (leakage)", self.duplicates_across),
                              ("duplicates within a class", self.duplicates_within),
                              ("the same image under two classes", self.conflicting)):
            if groups:
                out.append(f"  {title}: {len(groups)}: " + "; ".join(" = ".join(g) for g in groups[:SHOWN])
                           + (f"; and {len(groups) - SHOWN} more" if len(groups) > SHOWN else ""))
        if self.dropped_duplicates:
            out.append(f"  dropped duplicates: {self.dropped_duplicates} (drop_duplicates)")
        if self.small_classes:
            out.append("  classes with 0 or 1 image: " + ", ".join(f"{c} {n}" for c, n in self.small_classes.items()))
        out.append(f"  class imbalance: {self.imbalance:.2f} (largest / smallest training class)"
                   + (f" > {IMBALANCE_FLAG}: lead reports with balanced accuracy" if self.imbalanced else ""))
        out += [f"  {note}" for note in self.notes]
        out += [f"PROBLEM: {p}" for p in self.problems]
        return out


@dataclass
class FolderData:
    """A decoded dataset given by path: uint8 images [N, C, S, S] and int64 labels per split (val None when it is
    drawn from training), `train_groups` (int64 [N]: training images with the same bytes share an id, so a drawn
    validation split keeps them together), its DatasetInfo and its audit."""
    splits: Splits
    val_x: torch.Tensor | None
    val_y: torch.Tensor | None
    train_groups: torch.Tensor
    info: DatasetInfo
    audit: Audit


def _some(items: list[str], bare: bool = False) -> str:
    if not items:
        return ""
    text = ", ".join(items[:SHOWN]) + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")
    return text if bare else f" ({text})"


def _by_extension(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        ext = os.path.splitext(name)[1].lower() or "no extension"
        counts[ext] = counts.get(ext, 0) + 1
    return ", ".join(f"{ext} {n}" for ext, n in sorted(counts.items()))


def _stat(path: str | Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------- scanning
def scan(path: str | os.PathLike) -> Scan:
    """Find the images of a dataset given by path (no image is read). Raises DatasetError for a path that is none of
    the layouts."""
    root = Path(path).expanduser().resolve()
    if root.is_dir():
        return _scan_folder(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return _scan_manifest(root)
    if root.is_file() and root.suffix.lower() == ".npz":
        return _scan_npz(root)
    what = "does not exist" if not root.exists() else "is neither a folder, a .csv manifest nor an .npz file"
    raise DatasetError(f"dataset {str(path)!r} {what}; give a folder of class folders (or train/ [val/] [test/] "
                       f"of class folders), a CSV manifest (image path and label columns) or an .npz (x, y)")


def _visible(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def _walk_class(scan_: Scan, folder: Path, label: str, split: str) -> int:
    """Add the images under a class folder (subfolders included) to scan_; returns how many. Paths are strings, not
    pathlib objects: every later trial walks all the files to check its cache, and pathlib took most of that time
    (60,000 files: 7.5 s against 1.5 s for the walk and the stats alone, on the loaded 2-core AMD EPYC VM, avx2 and
    avx512_bf16, 2026-12-06)."""
    found = 0
    stack = [str(folder)]
    while stack:
        dirpath = stack.pop()
        rel_dir = os.path.relpath(dirpath, scan_.root).replace(os.sep, "/")
        subdirs = []
        try:
            listed = sorted(os.scandir(dirpath), key=lambda d: d.name)
        except OSError:   # unreadable: skipped, as os.walk skips it
            continue
        for d in listed:
            name, rel = d.name, f"{rel_dir}/{d.name}"
            if d.is_dir():
                if images.is_hidden(name):
                    scan_.hidden.append(rel + "/")
                elif not d.is_symlink():   # listed, not followed, as os.walk does
                    subdirs.append(d.path)
            elif images.is_hidden(name):
                scan_.hidden.append(rel)
            elif not images.is_image_name(name):
                scan_.not_images.append(rel)
            else:
                scan_.entries.append(Entry(rel, label, split, d.path, _stat(d.path)))
                found += 1
        stack += reversed(subdirs)   # depth first, in name order, as os.walk went
    return found


def _scan_folder(root: Path) -> Scan:
    children = _visible(root)
    split_dirs = {SPLIT_NAMES[e.name.lower()]: e for e in children if e.is_dir() and e.name.lower() in SPLIT_NAMES}
    split_layout = "train" in split_dirs
    s = Scan(root, "train/val/test folders" if split_layout else "class folders (no split given)", [])
    tops = {split: Path(entry.path) for split, entry in split_dirs.items()} if split_layout else {"train": root}
    for e in children:
        if images.is_hidden(e.name):
            s.hidden.append(e.name)
        elif split_layout and e.is_dir() and e.name.lower() in SPLIT_NAMES:
            continue
        elif e.is_dir() and not split_layout:
            continue
        else:
            s.outside.append(e.name + ("/" if e.is_dir() else ""))
    for split, top in tops.items():
        for e in _visible(top) if top != root else children:
            if images.is_hidden(e.name):
                if top != root:
                    s.hidden.append(f"{top.name}/{e.name}")
            elif e.is_dir():
                if not _walk_class(s, Path(e.path), e.name, split) and split == "train":
                    s.empty_classes.append(e.name)
            elif top != root:
                s.outside.append(f"{top.name}/{e.name}")
    return s


def _column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {re.sub(r"[\s-]+", "_", c.strip().lower()): c for c in columns}   # "File Name" is file_name
    return next((lower[n] for n in names if n in lower), None)


def _scan_manifest(csv: Path) -> Scan:
    import pandas as pd

    from .files import text_encoding
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding=text_encoding(csv))   # UTF-16: Excel
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(f"{csv} cannot be read as a CSV manifest ({' '.join(str(err).split())}); it needs a "
                           f"header row naming an image path column and a label column") from None
    columns = [str(c) for c in frame.columns]
    path_col, label_col = _column(columns, PATH_COLUMNS), _column(columns, MANIFEST_LABELS)
    split_col = _column(columns, SPLIT_COLUMNS)
    if path_col is None or label_col is None:
        missing = " and ".join(f"no {what} column (one of {', '.join(names)})" for what, col, names in
                               (("image path", path_col, PATH_COLUMNS), ("label", label_col, MANIFEST_LABELS))
                               if col is None)
        raise DatasetError(f"{csv}: its header ({', '.join(columns)}) has {missing}; rename the column")
    s = Scan(csv, "CSV manifest" + (f" (split column {split_col!r})" if split_col else " (no split given)"), [],
             sources=[csv])
    for row, (name, label, split) in enumerate(zip(frame[path_col], frame[label_col],
                                                   frame[split_col] if split_col else [""] * len(frame)), 2):
        name, label, split = name.strip(), label.strip(), split.strip().lower()
        if not name or not label:
            raise DatasetError(f"{csv}: row {row} has no {'image path' if not name else 'label'}; every row needs "
                               f"both")
        if split_col and split not in SPLIT_NAMES:
            raise DatasetError(f"{csv}: row {row} has split {split!r}; use train, val or test")
        full = Path(name).expanduser()
        full = full if full.is_absolute() else csv.parent / full
        s.entries.append(Entry(Path(name).as_posix(), label, SPLIT_NAMES.get(split, "train"), full, _stat(full)))
    return s


NPZ_ARRAYS = {"train": ("x", "y"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}


NPZ_LAYOUT = ".npz arrays"


def _npz_image(arrays: dict[str, np.ndarray], e: Entry) -> np.ndarray:
    """The image [H, W, C] an .npz entry ("x_test[12]") names, from {array name: images}."""
    cut = e.name.index("[")
    return arrays[e.name[:cut]][int(e.name[cut + 1:-1])]


def _scan_npz(path: Path) -> Scan:
    arrays = _npz_arrays(path, labels_only=True)
    s = Scan(path, NPZ_LAYOUT, [], sources=[path])
    for split, (_, y) in arrays.items():
        xname = NPZ_ARRAYS[split][0]
        s.entries += [Entry(f"{xname}[{i}]", label, split) for i, label in enumerate(y)]
    return s


def _npz_arrays(path: Path, labels_only: bool = False) -> dict[str, tuple[np.ndarray | None, list[str]]]:
    """split -> (images uint8 [N, H, W, C] or None with labels_only, labels as text) of an .npz."""
    try:
        npz = np.load(path, allow_pickle=False)
        names = set(npz.files)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetError(f"{path} cannot be read as an .npz ({' '.join(str(err).split())})") from None
    if not {"x", "y"} <= names:
        raise DatasetError(f"{path} holds arrays {', '.join(sorted(names)) or 'none'}; it needs x (uint8 images "
                           f"[N, H, W] or [N, H, W, C]) and y (labels), optionally x_test/y_test and x_val/y_val")
    out = {}
    for split, (xname, yname) in NPZ_ARRAYS.items():
        if xname not in names and yname not in names:
            continue
        if xname not in names or yname not in names:
            raise DatasetError(f"{path} has {xname if xname in names else yname} without "
                               f"{yname if xname in names else xname}; give both or neither")
        try:
            y = npz[yname]
            x = npz[xname] if not labels_only else None
        except ValueError as err:   # object arrays need pickle, which we do not load
            raise DatasetError(f"{path}: {' '.join(str(err).split())}; save labels as numbers or fixed-width "
                               f"strings (np.savez without object arrays)") from None
        if y.ndim != 1:
            raise DatasetError(f"{path}: {yname} has shape {y.shape}; labels must be one per image, shape [N]")
        if x is not None:
            if x.dtype != np.uint8:
                hint = " (scaled to 0..1? multiply by 255)" if x.dtype.kind == "f" and x.size and x.max() <= 1 \
                    else ""
                raise DatasetError(f"{path}: {xname} is {x.dtype}; images must be uint8 0..255{hint}: "
                                   f"x.astype(np.uint8)")
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or x.shape[-1] not in (1, 3):
                raise DatasetError(f"{path}: {xname} has shape {x.shape}; expected [N, H, W] (grey) or "
                                   f"[N, H, W, 1 or 3] (channels last)")
            if len(x) != len(y):
                raise DatasetError(f"{path}: {xname} holds {len(x)} images and {yname} {len(y)} labels")
        out[split] = (x, [str(v.item() if hasattr(v, "item") else v).strip() for v in y])
    return out


# ---------------------------------------------------------------------------------------------------- the survey
def _read_headers(s: Scan) -> None:
    """Hash every file's bytes and read its header (size, mode, grey): no pixels decoded."""
    def one(e: Entry) -> None:
        try:
            e.digest = hashlib.blake2b(Path(e.path).read_bytes(), digest_size=16).hexdigest()
        except OSError as err:
            e.error = f"unreadable ({err.strerror or err})"
            return
        try:
            e.width, e.height, e.mode, e.grey = images.header(e.path)
        except images.ImageError:
            e.error = "not an image Pillow can read"
    with ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(one, s.entries))


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------------- memory
def available_memory() -> int:
    """Bytes that can be allocated now without swapping (psutil's `available`, which counts reclaimable page cache):
    what the memory checks compare with. Tests replace it to simulate a small machine."""
    import psutil
    return int(psutil.virtual_memory().available)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _largest_side(n: int, channels: int, free: float, bytes_per_value: int) -> int:
    """The largest image_size (a multiple of 4, at least 4) whose n images fit in `free` bytes; 0 when none does."""
    side = int(math.sqrt(max(free, 0) / max(1, n * channels * bytes_per_value))) // 4 * 4
    return side if side >= 4 else 0


def decode_memory_problem(n: int, channels: int, side: int) -> str | None:
    """Why decoding `n` images into uint8 [n, channels, side, side] would not fit in the memory available now (one
    line: the figures and the fix), or None when it fits. The decode holds every image (n * channels * side**2 bytes)
    until it is written to the cache; a later trial maps the cache file instead of reading it (_read_cache)."""
    need, free = n * channels * side * side, available_memory() - MEMORY_RESERVE
    if need <= free:
        return None
    fits = _largest_side(n, channels, free, 1)
    return (f"decoding {n} images at {channels}x{side}x{side} needs {_gb(need)} of memory (uint8) and {_gb(free)} is "
            f"available (keeping {_gb(MEMORY_RESERVE)} free); lower image_size"
            + (f" ({fits} fits: {_gb(n * channels * fits * fits)})" if fits else "")
            + ", use fewer files, or use a machine with more memory")


def training_memory(train: int, val: int, test: int, shape: tuple[int, int, int]) -> int:
    """Bytes a trial's data takes at its peak on the CPU (trial.data.prepare): the float32 copies it keeps of `train`,
    `val` and `test` images of `shape` (C, H, W), plus, while the largest split is converted, its uint8 copy and a
    float32 temporary (5 bytes a value). The uint8 cache itself is a mapped file: its pages are page cache, not
    counted; TRAINING_HEADROOM covers what else the process takes meanwhile."""
    per = shape[0] * shape[1] * shape[2]
    return int(TRAINING_HEADROOM * per * (FLOAT_BYTES * (train + val + test)
                                          + (1 + FLOAT_BYTES) * max(train, val, test)))


def check_training_memory(train: int, val: int, test: int, shape: tuple[int, int, int]) -> None:
    """Raise DatasetError, one line with the figures and the fix (a train_subset that fits now, a lower image_size,
    eval_test false), when training_memory would not fit in the memory available now; prepare calls it before it
    normalises a dataset given by path on the CPU (a GPU holds the float copies in its own memory)."""
    need, free = training_memory(train, val, test, shape), available_memory() - MEMORY_RESERVE
    if need <= free:
        return
    per = shape[0] * shape[1] * shape[2]
    subset = int((free / per / TRAINING_HEADROOM - FLOAT_BYTES * (val + test)) // (2 * FLOAT_BYTES + 1))
    fits = 0 < subset < train and training_memory(subset, val, test, shape) <= free
    fixes = ([f"set train_subset {subset} (fits now)"] if fits else []) + ["lower image_size"] + \
        (["set eval_test false (the test images are held too)"] if test else []) + ["use a machine with more memory"]
    raise DatasetError(f"training on {train} images (+ {val} validation, {test} test) at {'x'.join(map(str, shape))} "
                       f"holds them as float32 on the CPU: {_gb(need)} at its peak, and {_gb(free)} is available "
                       f"(keeping {_gb(MEMORY_RESERVE)} free); {', '.join(fixes[:-1])} or {fixes[-1]}")


def class_order(labels) -> list[str]:
    """Class names sorted as ImageFolder sorts them, numerically when every label is an integer."""
    names = set(labels)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _split_file(root: Path, fraction: float) -> Path:
    return cache_dir() / f"{_prefix_root(root)}-test{fraction:g}.split.json"


def _prefix_root(root: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.name)[:40] or "root"
    return f"folder-{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:10]}"


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def _groups(entries: list[Entry]) -> dict[str, list[Entry]]:
    """Entries by content (the same bytes, one group); an entry whose bytes could not be read is its own group."""
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.digest or f"?{e.name}", []).append(e)
    return out


def stratified_split(labels: np.ndarray, groups: np.ndarray, held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices into `labels`: about `held` of the unique groups held out, stratified by the label
    of each group's first member (scikit-learn's train_test_split), a group never split. Needs at least two groups
    per class; raises DatasetError naming the counts otherwise."""
    unique, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = labels[first]
    classes, counts = np.unique(group_labels, return_counts=True)
    held = int(min(max(held, len(classes)), len(unique) - len(classes)))
    if counts.min() < 2 or held < len(classes):
        raise DatasetError(f"too few images to hold out a stratified split: images per class "
                           f"{dict(zip(classes.tolist(), counts.tolist()))}; each class needs at least 2")
    from sklearn.model_selection import train_test_split
    _, held_groups = train_test_split(np.arange(len(unique)), test_size=held, stratify=group_labels,
                                      random_state=seed)
    mask = np.isin(inverse, held_groups)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _assign_test(s: Scan, options: FolderOptions, audit: Audit) -> str | None:
    """Give every entry its split: as the layout says, or from the drawn test list (drawn now and written when there
    is none yet). Returns the split file's digest (None when the layout gives a test split)."""
    if s.test_given:
        audit.test_split = "given by the dataset"
        return None
    path = _split_file(s.root, options.test_fraction)
    pool = [e for e in s.entries if e.split == "train"]
    if not path.is_file():
        order = class_order(e.label for e in pool)
        labels = np.array([order.index(e.label) for e in pool])
        groups = np.array([e.digest or f"?{e.name}" for e in pool])
        _, held = stratified_split(labels, groups, round(options.test_fraction * len(set(groups.tolist()))),
                                   TEST_SEED)
        test = sorted([pool[i].name, pool[i].label] for i in held)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"dataset": str(s.root), "test_fraction": options.test_fraction, "seed": TEST_SEED,
                                   "drawn": time.strftime("%Y-%m-%dT%H:%M:%S"), "test": test}, indent=0) + "\n")
        os.replace(tmp, path)
        audit.notes.append(f"test split drawn: {len(test)} images ({options.test_fraction:g}, stratified, seed "
                           f"{TEST_SEED}), listed in {path}")
    listed = {name for name, _ in json.loads(path.read_text())["test"]}
    for e in pool:
        if e.name in listed:
            e.split = "test"
    names = {e.name for e in s.entries}
    gone = sorted(listed - names)
    audit.test_split = (f"{options.test_fraction:g} of the images, stratified (seed {TEST_SEED}), the list in {path}"
                        f"{f'; {len(gone)} listed images no longer exist' if gone else ''}")
    return _file_digest(path)


def _needed(s: Scan, test_drawn: bool) -> int:
    """Distinct images each class needs: one to train on, one more for each split still to be drawn from it."""
    return 1 + (test_drawn and not s.test_given) + (not s.val_given)


def _check_classes(audit: Audit, pool: list[Entry], classes: list[str], need: int, when: str) -> None:
    per = {c: len({e.digest or e.name for e in pool if e.label == c}) for c in classes}
    small = {c: n for c, n in per.items() if n < need}
    if small:
        many = len(small) > 1
        audit.problems.append(
            f"class{'es' if many else ''} {', '.join(f'{c!r} ({n})' for c, n in small.items())} "
            f"{'have' if many else 'has'} too few distinct training images {when}: training plus the test and "
            f"validation splits drawn from it need {need} per class (counts: "
            f"{', '.join(f'{c} {n}' for c, n in per.items())}); add images, give test/ and val/ folders, or remove "
            f"the class")


def _survey(s: Scan, options: FolderOptions, fail_fast: bool = True):
    """The audit of a scanned dataset, and its arrays when nothing is refused: (Audit, {split: (images uint8
    [N, C, S, S], their entries)} or None, split-file digest). With `fail_fast` it stops before decoding when
    something is refused already; otherwise it goes as far as it can, for the audit's sake."""
    audit = Audit(str(s.root), s.layout, hidden=s.hidden, not_images=s.not_images, outside=s.outside,
                  resize_mode=options.resize_mode)
    npz = None
    if s.layout == NPZ_LAYOUT:
        npz = {NPZ_ARRAYS[split][0]: x for split, (x, _) in _npz_arrays(s.root).items()}
        for e in s.entries:
            a = _npz_image(npz, e)
            e.digest = hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest()
            e.height, e.width, e.grey = a.shape[0], a.shape[1], a.shape[2] == 1
            e.mode = "L" if e.grey else "RGB"
    else:
        _read_headers(s)
    classes = class_order({e.label for e in s.entries if e.split == "train"} | set(s.empty_classes))
    audit.classes = classes
    _count(audit, s.entries)
    if len(classes) < 2:
        audit.problems.append(f"{len(classes)} class{'' if len(classes) == 1 else 'es'} of training images found "
                              f"({s.layout}); a classifier needs at least 2: one folder (or label) per class")
    strays = sorted({f"{e.label!r} ({e.split})" for e in s.entries if e.label not in classes})
    if strays:
        audit.problems.append(f"class{'es' if len(strays) > 1 else ''} {', '.join(strays)} "
                              f"{'have' if len(strays) > 1 else 'has'} no training images; add them to train or "
                              f"remove them")
    _check_classes(audit, [e for e in s.entries if e.split == "train" and not e.error], classes, _needed(s, True),
                   "to split")
    split_digest = None
    if audit.problems:
        audit.test_split = "not drawn (see the problems)"
    else:
        split_digest = _assign_test(s, options, audit)
    audit.val_split = "given by the dataset" if s.val_given else \
        f"drawn from training at each run (stratified, split_seed, at most {VAL_FRACTION:g} of it; val_size a cap)"
    _duplicates(s, options, audit)
    usable = [e for e in s.entries if not e.error] or [Entry("", "", "")]
    shorter = [min(e.width, e.height) for e in usable]
    longer = [max(e.width, e.height) for e in usable]
    audit.shorter_side = (min(shorter), int(statistics.median(shorter)), max(shorter))
    audit.longer_side = (min(longer), int(statistics.median(longer)), max(longer))
    audit.modes = {}
    for e in usable:
        if e.mode:
            audit.modes[e.mode] = audit.modes.get(e.mode, 0) + 1
    audit.channels = 1 if all(e.grey for e in usable) else 3
    audit.image_size, audit.image_size_note = _image_size(options, audit.shorter_side[1])
    if not options.mirror_safe:
        audit.notes.append("mirror_safe false: no flip augmentation or mirror test-time augmentation (set "
                           "mirror_safe true if a mirrored image keeps its class)")
    held = decode_memory_problem(sum(not e.error and e.split != "dropped" for e in s.entries), audit.channels,
                                 audit.image_size)
    if held:   # refused before a decode that would be killed for memory (the whole machine's, without a word)
        audit.problems.append(held)
    arrays = None
    if not (fail_fast and audit.problems) and not held:
        arrays = _decode(s, npz, audit, options)
    bad = [e for e in s.entries if e.error]
    audit.bad = [f"{e.name}: {e.error}" for e in bad]
    if bad and options.skip_bad_images:
        audit.skipped_images = len(bad)
    elif bad:
        audit.problems.append(f"{len(bad)} file{'s do' if len(bad) > 1 else ' does'} not decode as an image: "
                              f"{_some(audit.bad, bare=True)}; fix or delete {'them' if len(bad) > 1 else 'it'}, or "
                              f"set skip_bad_images true to train without {'them' if len(bad) > 1 else 'it'}")
    kept = [e for e in s.entries if not e.error and e.split != "dropped"]
    if not audit.problems:
        _check_classes(audit, [e for e in kept if e.split == "train"], classes, _needed(s, False),
                       "left after the exclusions")
    _count(audit, kept)
    return audit, (arrays if not audit.problems else None), split_digest


def _count(audit: Audit, entries: list[Entry]) -> None:
    """Images per split and class, the classes with 0 or 1 image, and the imbalance of the training split."""
    audit.counts = {split: {c: 0 for c in audit.classes} for split in SPLITS}
    for e in entries:
        if e.split in audit.counts and e.label in audit.counts[e.split]:
            audit.counts[e.split][e.label] += 1
    totals = {c: sum(audit.counts[sp][c] for sp in SPLITS) for c in audit.classes}
    audit.small_classes = {c: n for c, n in totals.items() if n <= 1}
    train = list(audit.counts["train"].values()) or [0]
    audit.imbalance = round(max(train) / max(1, min(train)), 3)


def _duplicates(s: Scan, options: FolderOptions, audit: Audit) -> None:
    rank = {"test": 0, "val": 1, "train": 2}
    for members in _groups([e for e in s.entries if not e.error]).values():
        if len(members) < 2:
            continue
        names = [f"{e.name}" for e in members]
        if len({e.split for e in members}) > 1:
            audit.duplicates_across.append(names)
        elif len({e.label for e in members}) > 1:
            audit.conflicting.append(names)
        else:
            audit.duplicates_within.append(names)
        if options.drop_duplicates:
            keep = min(members, key=lambda e: (rank[e.split], e.name))
            for e in members:
                if e is not keep:
                    e.split = "dropped"
                    audit.dropped_duplicates += 1
    if audit.duplicates_across and not options.drop_duplicates:
        shown = "; ".join(" = ".join(g) for g in audit.duplicates_across[:SHOWN])
        audit.problems.append(f"{len(audit.duplicates_across)} image{'s are' if len(audit.duplicates_across) > 1 else ' is'} "
                              f"in two splits (the same file bytes; leakage: a test image seen in training): {shown}"
                              f"{' and more' if len(audit.duplicates_across) > SHOWN else ''}; delete one copy of "
                              f"each, or set drop_duplicates true (keeps the copy in test, then val)")


def _image_size(options: FolderOptions, median_shorter: int) -> tuple[int, str]:
    if options.image_size:
        return options.image_size, ""
    low, high = AUTO_SIDE
    side = int(min(max(4 * round(min(max(median_shorter, low), high) / 4), low), high))
    return side, (f"image_size {side} chosen from the median shorter side {median_shorter} px (clamped to "
                  f"{low}..{high}, a multiple of 4); set image_size to choose another")


def _decode(s: Scan, npz, audit: Audit, options: FolderOptions) -> dict[str, tuple[np.ndarray, list[Entry]]]:
    """{split: (uint8 [N, C, S, S], its entries)}: the usable entries decoded into one array allocated up front, in
    split order (each split a view of it), so the decode's peak is the images themselves, not twice them as
    stacking a list would be; a file that does not decode gets its `error` and its slot is closed up."""
    size, channels = audit.image_size, audit.channels
    todo = sorted((e for e in s.entries if not e.error and e.split != "dropped"), key=lambda e: SPLITS.index(e.split))
    x = np.empty((len(todo), channels, size, size), np.uint8)

    def one(i: int) -> bool:
        e = todo[i]
        try:
            if npz is None:
                x[i] = images.read(e.path, size, options.resize_mode, channels, BACKGROUND)
                return True
            a = _npz_image(npz, e)
            if a.shape == (size, size, channels):
                x[i] = a.transpose(2, 0, 1)
                return True
            from PIL import Image
            x[i] = images.to_array(Image.fromarray(a[..., 0] if a.shape[2] == 1 else a), size, options.resize_mode,
                                   channels, BACKGROUND)
            return True
        except images.ImageError as err:
            e.error = str(err).split(": ", 1)[-1].split("; give a")[0]
            return False
    with ThreadPoolExecutor(_workers()) as pool:
        ok = list(pool.map(one, range(len(todo))))
    kept = 0
    for i, good in enumerate(ok):   # close up the failed slots in place (kept <= i: nothing is overwritten unread)
        if good:
            if kept != i:
                x[kept] = x[i]
            kept += 1
    entries = [e for e, good in zip(todo, ok) if good]
    out, start = {}, 0
    for split in SPLITS:
        n = sum(e.split == split for e in entries)
        out[split] = (x[start:start + n], entries[start:start + n])
        start += n
    return out


def _mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W] scaled to [0, 1], in chunks (no float copy of it all)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in x.split(4096):
        c = chunk.to(torch.float64) / 255
        total += c.sum((0, 2, 3))
        squares += (c * c).sum((0, 2, 3))
    n = max(1, x.shape[0] * x.shape[2] * x.shape[3])
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


# ---------------------------------------------------------------------------------------------------- the cache
def _cache_stem(s: Scan, options: FolderOptions) -> tuple[str, str]:
    """(prefix: the dataset and the data options, stem: the prefix and the files' paths, sizes and mtimes)."""
    from .data import CACHE_VERSION
    prefix = f"{_prefix_root(s.root)}-" + hashlib.sha256(options.data_key().encode()).hexdigest()[:8]
    h = hashlib.sha256(f"{CACHE_VERSION}:{FOLDER_VERSION}:{s.root}:{options.data_key()}\n".encode())
    for src in s.sources:
        h.update(f"source {src}:{_stat(src)}\n".encode())
    h.update("".join(f"{e.name}\0{e.label}\0{e.split}\0{e.stat}\n" for e in s.entries).encode())   # one update
    return prefix, f"{prefix}-{h.hexdigest()[:12]}"


def _info(s_root: str, meta: dict, options: FolderOptions) -> DatasetInfo:
    return DatasetInfo(s_root, s_root, tuple(meta["shape"]), tuple(meta["mean"]), tuple(meta["std"]),
                       tuple(meta["classes"]), (), "crop", BACKGROUND, "", mirror_safe=options.mirror_safe,
                       imbalance=meta["imbalance"], skipped_images=meta["skipped_images"])


def _audit_from(meta: dict) -> Audit:
    a = meta["audit"]
    for key in ("shorter_side", "longer_side"):
        a[key] = tuple(a[key])
    return Audit(**a)


def _read_cache(stem: str, split_file: Path | None, options: FolderOptions) -> FolderData | None:
    pt, side = cache_dir() / f"{stem}.pt", cache_dir() / f"{stem}.json"
    if not (pt.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
        if split_file is not None and meta["split_digest"] != _file_digest(split_file):
            return None   # the test list was deleted or edited: draw or read it again
        t = torch.load(pt, weights_only=True, mmap=True)   # mapped, not read: see the module docstring
        return FolderData(Splits(t["train_x"], t["train_y"], t["test_x"], t["test_y"]), t.get("val_x"),
                          t.get("val_y"), t["train_groups"], _info(meta["dataset"], meta, options), _audit_from(meta))
    except Exception as err:  # a half-written or damaged cache: decode again rather than fail
        print(f"[data] ignoring unreadable cache {pt} ({err}); decoding again", file=sys.stderr)
        return None


def refusal(audit: Audit) -> str:
    """One line for a refused dataset: its first problem, and where the others are listed."""
    more = len(audit.problems) - 1
    return (f"{audit.dataset}: {audit.problems[0]}"
            + (f" (and {more} more problem{'s' if more > 1 else ''}: `python -m trial.data {audit.dataset}` lists "
               f"them)" if more else ""))


_REFUSED: dict[tuple[str, bool], Audit] = {}   # cache stem (files and options), fail_fast -> the refused audit


def _open(path, options: FolderOptions | None, fail_fast: bool) -> tuple[FolderData | None, Audit]:
    """(the decoded dataset or None when refused, its audit): from the cache, else surveyed, decoded and cached (once,
    under a file lock: concurrent trials wait for the first one's decode)."""
    options = options or FolderOptions()
    s = scan(path)
    prefix, stem = _cache_stem(s, options)
    split_file = None if s.test_given else _split_file(s.root, options.test_fraction)
    found = _read_cache(stem, split_file, options)
    if found is not None:
        return found, found.audit
    if (stem, fail_fast) in _REFUSED:   # the same files refused before in this process (a pre-flight resolves
        return None, _REFUSED[stem, fail_fast]   # hundreds of configs): not surveyed again
    cache_dir().mkdir(parents=True, exist_ok=True)
    with cache_lock(str(cache_dir() / f"{prefix}.lock")):
        found = _read_cache(stem, split_file, options)   # another trial may have decoded it while we waited
        if found is not None:
            return found, found.audit
        start = time.perf_counter()
        audit, arrays, split_digest = _survey(s, options, fail_fast)
        if arrays is None:
            _REFUSED[stem, fail_fast] = audit
            return None, audit
        data = _write(s, stem, prefix, audit, arrays, split_digest, options)
    print(f"[data] decoded {sum(len(a[1]) for a in arrays.values())} images of {s.root} ({s.layout}) as "
          f"{audit.channels}x{audit.image_size}x{audit.image_size} in {time.perf_counter() - start:.1f}s; cached at "
          f"{cache_dir() / (stem + '.pt')}", file=sys.stderr)
    for line in [audit.image_size_note] + [n for n in audit.notes if n.startswith("test split drawn")]:
        if line:
            print(f"[data] {line}", file=sys.stderr)
    if audit.skipped_images:
        print(f"[data] skipped {audit.skipped_images} files that do not decode (skip_bad_images): "
              f"{_some(audit.bad, bare=True)}", file=sys.stderr)
    return data, audit


def load(path: str | os.PathLike, options: FolderOptions | None = None) -> FolderData:
    """The dataset at `path`, decoded once: later calls read the cache, keyed by the files' paths, sizes and mtimes
    and the options. Raises DatasetError with one line for a path that is no dataset or a dataset the audit refuses
    (its first problem; `python -m trial.data PATH` lists them all)."""
    data, found = _open(path, options, fail_fast=True)
    if data is None:
        raise DatasetError(refusal(found))
    return data


def audit(path: str | os.PathLike, options: FolderOptions | None = None) -> Audit:
    """The audit of the dataset at `path`, for a pre-flight check or `python -m trial.data PATH`: from the cache when
    it was decoded, else by decoding it (and caching it when nothing is refused, so the trials find it decoded).
    What it finds is in the Audit (`problems`: the refusals), never raised; DatasetError for a path that is no
    dataset of any layout."""
    return _open(path, options, fail_fast=False)[1]


def _write(s: Scan, stem: str, prefix: str, audit: Audit, arrays, split_digest, options) -> FolderData:
    order = audit.classes
    index = {c: i for i, c in enumerate(order)}
    tensors = {}
    for split, (x, entries) in arrays.items():
        tensors[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        tensors[f"{split}_y"] = torch.tensor([index[e.label] for e in entries], dtype=torch.int64)
    digests = [e.digest or e.name for e in arrays["train"][1]]
    first = {d: i for i, d in reversed(list(enumerate(digests)))}
    tensors["train_groups"] = torch.tensor([first[d] for d in digests], dtype=torch.int64)
    if not s.val_given:
        del tensors["val_x"], tensors["val_y"]
    mean, std = _mean_std(tensors["train_x"])
    meta = {"version": FOLDER_VERSION, "dataset": str(s.root), "shape": [audit.channels, audit.image_size,
                                                                         audit.image_size],
            "mean": mean, "std": std, "classes": order, "imbalance": audit.imbalance,
            "skipped_images": audit.skipped_images, "split_digest": split_digest, "audit": dataclasses.asdict(audit)}
    pt, side = cache_dir() / f"{stem}.pt", cache_dir() / f"{stem}.json"
    for stale in cache_dir().glob(f"{prefix}-*"):   # an older decode of these files (we hold the lock)
        if stale.suffix in (".pt", ".json") or ".tmp" in stale.suffix:
            stale.unlink(missing_ok=True)
    tmp, side_tmp = pt.with_suffix(f".tmp{os.getpid()}"), side.with_suffix(f".jtmp{os.getpid()}")
    torch.save(tensors, tmp)
    side_tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, pt)
    os.replace(side_tmp, side)   # readers want both: the sidecar last
    return FolderData(Splits(tensors["train_x"], tensors["train_y"], tensors["test_x"], tensors["test_y"]),
                      tensors.get("val_x"), tensors.get("val_y"), tensors["train_groups"],
                      _info(str(s.root), meta, options), audit)


def info(path: str | os.PathLike, options: FolderOptions | None = None) -> DatasetInfo:
    """The DatasetInfo of the dataset at `path` (shape, classes, mean/std, ...): from the latest cache of these
    options without walking the files when there is one (cheap: config checks call it), else by loading it."""
    options = options or FolderOptions()
    root = Path(path).expanduser().resolve()
    prefix = f"{_prefix_root(root)}-" + hashlib.sha256(options.data_key().encode()).hexdigest()[:8]
    sides = sorted(cache_dir().glob(f"{prefix}-*.json"), key=lambda p: p.stat().st_mtime)
    if sides:
        try:
            meta = json.loads(sides[-1].read_text())
            return _info(meta["dataset"], meta, options)
        except (OSError, ValueError, KeyError):
            pass
    return load(path, options).info


def carve_validation(labels: torch.Tensor, groups: torch.Tensor, val_size: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, validation) indices into the training split, stratified by class with `seed` (split_seed), images of
    the same bytes on one side, and a line saying what was drawn: val_size images, at most VAL_FRACTION of the
    training images (so a folder of 600 validates on about 120 under the default val_size 5000)."""
    n_groups = len(torch.unique(groups))
    held = min(val_size, max(1, round(VAL_FRACTION * n_groups)))
    keep, val = stratified_split(labels.numpy(), groups.numpy(), held, seed)
    note = f"validation {len(val)} of {len(labels)} training images (stratified, split_seed {seed}" + \
        (f"; val_size {val_size} capped at {VAL_FRACTION:g} of them)" if held < val_size else ")")
    return torch.from_numpy(keep), torch.from_numpy(val), note
