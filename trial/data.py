"""Datasets: find the files, decode them once into a cached tensor file, split, normalise, move to the device.

Where data is looked for, first match wins:
  1. the `data_dir` argument (`python -m trial --data-dir DIR`), else the environment variable CNNSEARCH_DATA;
  2. otherwise ~/.cache/cnnsearch/data, then `data/` in the repository, then `../shared/data` beside it.
Inside a data directory the torchvision layouts are read:
  MNIST/raw/*-idx?-ubyte[.gz|.xz]           (or MNIST/train.csv [+ test.csv], Kaggle digit-recognizer style)
  FashionMNIST/raw/*-idx?-ubyte[.gz|.xz]
  CIFAR10/cifar-10-batches-bin/*.bin[.gz|.xz]   or   CIFAR10/cifar-10-batches-py/ (also directly under DIR)
Missing files are downloaded with torchvision where a network exists (CNNSEARCH_NO_DOWNLOAD=1 turns that off).

The decoded uint8 tensors are cached under CNNSEARCH_CACHE (default ~/.cache/cnnsearch), keyed by the source files'
paths, sizes and times; a file lock makes concurrent trials decode once and then all read the cache.

A dataset that is not a name of the table is a path: a folder of images, a CSV manifest or an .npz, audited and
decoded by trial/folder.py into the same kind of cache (its DatasetInfo built from the files).

    python -m trial.data fmnist              # decode (or find the cache) and print the split sizes
    python -m trial.data path/to/images      # audit a dataset given by path (and decode it): exit 1 if refused
    python -m trial.data path/to/images --image_size 64 --resize_mode pad   # the audit under these config keys
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import lzma
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import REPO

CACHE_VERSION = 1
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_BIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR_PY = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
COMPRESSED = ("", ".gz", ".xz")


class DatasetError(RuntimeError):
    """Data that is missing or unreadable; the message says where we looked and how to fix it."""


@dataclass
class Splits:
    """uint8 images [N, C, H, W] and int64 labels [N]."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def info(name: str, options=None) -> DatasetInfo:
    """The table entry of dataset `name`, or for a path the DatasetInfo trial/folder.py builds from the files under
    `options` (a folder.FolderOptions; the defaults when None), decoding them if they are not cached yet. Raises
    DatasetError naming the valid datasets for a name that is neither, or the audit's refusal."""
    if name in INFO:
        return INFO[name]
    if not Path(name).expanduser().exists():
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(INFO)}, or the path of an image "
                           f"folder, a CSV manifest or an .npz file")
    from . import folder
    return folder.info(name, options)


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    if data_dir:
        return [Path(data_dir).expanduser()]
    if os.environ.get("CNNSEARCH_DATA"):
        return [Path(os.environ["CNNSEARCH_DATA"]).expanduser()]
    return [Path.home() / ".cache" / "cnnsearch" / "data", REPO / "data", REPO.parent / "shared" / "data"]


LOCK_TIMEOUT_S = 1800.0   # the longest a trial waits for another process's decoding (CNNSEARCH_LOCK_TIMEOUT, seconds)


@contextmanager
def cache_lock(path: str | os.PathLike, timeout_s: float | None = None, poll_s: float = 2.0) -> Iterator[None]:
    """Hold the file lock `path` (concurrent trials decode a dataset once), its holder's pid written beside it
    (`path`.pid). Waiting says so once, on stderr; raises DatasetError when the holder is stopped (SIGSTOP, Ctrl-Z: it
    would never release it), naming its pid and the fix, or after `timeout_s` (default CNNSEARCH_LOCK_TIMEOUT, else
    LOCK_TIMEOUT_S). A holder that died releases the lock with its process (an OS file lock)."""
    import filelock
    import psutil
    limit = timeout_s if timeout_s is not None else float(os.environ.get("CNNSEARCH_LOCK_TIMEOUT", LOCK_TIMEOUT_S))
    lock, pid_file = filelock.FileLock(str(path)), Path(f"{path}.pid")
    start, said = time.monotonic(), False
    while True:
        try:
            lock.acquire(timeout=poll_s)
            break
        except filelock.Timeout:
            try:
                holder = int(pid_file.read_text())
                stopped = psutil.Process(holder).status() == psutil.STATUS_STOPPED
            except (OSError, ValueError, psutil.Error):
                holder, stopped = None, False
            who = f"process {holder}" if holder else "another process"
            if stopped:
                raise DatasetError(f"the dataset cache lock {path} is held by {who}, which is stopped (SIGSTOP or "
                                   f"Ctrl-Z) and will never release it: resume it (kill -CONT {holder}) or end it "
                                   f"(kill {holder}), then run again") from None
            waited = time.monotonic() - start
            if waited > limit:
                raise DatasetError(f"waited {waited:.0f} s for the dataset cache lock {path}, held by {who}; if "
                                   f"nothing is decoding, end it, or set CNNSEARCH_LOCK_TIMEOUT to wait longer") from None
            if not said:
                print(f"[data] waiting for {who} to finish decoding (lock {path}; at most {limit:.0f} s)",
                      file=sys.stderr)
                said = True
    try:
        pid_file.write_text(str(os.getpid()))
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def cache_dir() -> Path:
    return Path(os.environ.get("CNNSEARCH_CACHE", Path.home() / ".cache" / "cnnsearch")).expanduser()


# ---------------------------------------------------------------------------------------------------- file readers
def _find(folder: Path, base: str) -> Path | None:
    for ext in COMPRESSED:
        if (folder / (base + ext)).is_file():
            return folder / (base + ext)
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        if path.suffix == ".xz":
            with lzma.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, OSError, lzma.LZMAError) as err:
        raise DatasetError(f"{path} is truncated or corrupt ({err}); delete it and download it again") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic 0x0000 08 <ndim>, one uint32 per dimension, uint8 data."""
    raw = _read_bytes(path)
    if len(raw) < 8 or raw[0:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX uint8 file (bad magic number): the wrong file, or corrupt; "
                           f"delete it and download it again")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is truncated or corrupt: it ends inside its {ndim}-dimension header; "
                           f"delete it and download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    start, expected = 4 + 4 * ndim, int(np.prod(dims))
    if len(raw) - start != expected:
        raise DatasetError(f"{path} is truncated or corrupt: header says {dims} = {expected} bytes of data, "
                           f"file has {len(raw) - start}; delete it and download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _idx_splits(folder: Path, sources: list[Path]) -> Splits:
    arrays = []
    for base in IDX_FILES:
        path = _find(folder, base)
        sources.append(path)
        arrays.append(read_idx(path))
    tx, ty, vx, vy = arrays
    for x, y, path in ((tx, ty, sources[0]), (vx, vy, sources[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{path}: images {x.shape} and labels {y.shape} do not match")
    return Splits(*(torch.from_numpy(a.copy()) for a in (tx[:, None], ty.astype(np.int64), vx[:, None],
                                                           vy.astype(np.int64))))


LABEL_COLUMNS = ("label", "labels", "class", "target", "y")   # header names taken as the label column (any case)
PIXELS = 28 * 28


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A digit-recognizer CSV: one image per row, 784 pixel columns (row-major 28x28, integers 0..255) and, in a
    labelled file, a label column (integers 0..9). With a header row (any field not a number) the label column is
    the one named like LABEL_COLUMNS, wherever it stands (Kaggle puts it first; pandas, writing a numpy array beside
    a label series, last); without one it is the first column (the mnist_train.csv convention), and a file of 784
    columns is unlabelled (Kaggle's test.csv). Returns (pixels uint8 [N, 784], labels int64 [N] or None).
    Raises DatasetError, one line naming the file, for anything it cannot take as it is: no label column it can
    name, a wrong number of columns, values that are not numbers, pixels that are not integers in 0..255 (e.g.
    scaled to 0..1), labels outside 0..9, or a first column that holds pixel-like values."""
    import pandas as pd

    from .files import text_encoding
    try:   # the first row as text (pandas opens .gz and .xz by their extension); UTF-16 by its byte-order mark
        encoding = text_encoding(path)
        first = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                            encoding=encoding).iloc[0].tolist()
    except (OSError, UnicodeError, EOFError, lzma.LZMAError, pd.errors.ParserError,
            pd.errors.EmptyDataError, IndexError) as err:
        raise DatasetError(f"{path} cannot be read as a CSV ({type(err).__name__}: {err}); it should hold one image "
                           f"per row, {PIXELS} pixel columns of 0..255 and a label column") from None
    has_header = any(not _is_number(field) for field in first)
    try:
        frame = pd.read_csv(path, header=0 if has_header else None, encoding=encoding)
    except (ValueError, OSError, EOFError, lzma.LZMAError, pd.errors.ParserError) as err:
        raise DatasetError(f"{path} is not a well-formed CSV ({str(err).splitlines()[0]}); every row needs the "
                           f"same {PIXELS} pixel columns (and a label column in a labelled file)") from None
    columns = [str(c).strip() for c in frame.columns]
    if has_header:
        named = [i for i, c in enumerate(columns) if c.lower() in LABEL_COLUMNS]
        if len(named) > 1:
            raise DatasetError(f"{path}: columns {', '.join(columns[i] for i in named)} could each be the label; "
                               f"keep one named 'label'")
        label_col = named[0] if named else None
        if label_col is None and len(columns) != PIXELS:
            raise DatasetError(f"{path}: its header names no label column (one of {', '.join(LABEL_COLUMNS)}) and "
                               f"it has {len(columns)} columns, not {PIXELS} pixels; name the label column 'label'")
    else:
        label_col = 0 if len(columns) == PIXELS + 1 else None
    pixel_cols = [i for i in range(len(columns)) if i != label_col]
    if len(pixel_cols) != PIXELS:
        raise DatasetError(f"{path} has {len(columns)} columns: {len(pixel_cols)} pixel columns"
                           f"{' and a label column' if label_col is not None else ''}; expected {PIXELS} pixels "
                           f"(28x28){' and a label column' if label_col is not None else ''}")
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.argwhere(np.isnan(values))
    if len(bad):
        row, col = bad[0]
        raise DatasetError(f"{path}: row {row + 1 + has_header}, column {columns[col]!r} is "
                           f"{frame.iat[row, col]!r}, not a number")
    pixels = values[:, pixel_cols]
    if (pixels != np.round(pixels)).any() or pixels.min() < 0 or pixels.max() > 255:
        scaled = pixels.min() >= 0 and pixels.max() <= 1
        raise DatasetError(f"{path}: pixels must be integers 0..255, found values in {pixels.min():g}..{pixels.max():g}"
                           f"{' (scaled to 0..1? multiply by 255)' if scaled else ''}")
    labels = None
    if label_col is not None:
        labels = values[:, label_col]
        where = f"column {columns[label_col]!r}" if has_header else "the first column (no header row)"
        if (labels != np.round(labels)).any() or labels.min() < 0 or labels.max() > 9:
            hint = ("; if the label is another column, add a header row that names it 'label'" if not has_header
                    else "")
            raise DatasetError(f"{path}: labels ({where}) must be integers 0..9, found values in "
                               f"{labels.min():g}..{labels.max():g}{hint}")
        if len(labels) >= 100 and len(np.unique(labels)) == 1:
            raise DatasetError(f"{path}: every one of its {len(labels)} labels ({where}) is {labels[0]:g}: the "
                               f"wrong column? name the label column 'label' in a header row")
        labels = labels.astype(np.int64)
    return pixels.astype(np.uint8), labels


def _csv_splits(folder: Path, sources: list[Path]) -> Splits:
    """Kaggle digit-recognizer style (see read_csv). Kaggle's test.csv has no labels, so without a labelled test file
    a fixed 10,000 images of train.csv are held out as the test split."""
    train_path = _find(folder, "train.csv") or _find(folder, "mnist_train.csv")
    sources.append(train_path)
    train_x, train_y = read_csv(train_path)
    if train_y is None:
        raise DatasetError(f"{train_path} has no label column: {PIXELS} pixel columns only; add the labels as a "
                           f"column named 'label'")
    test = None
    for name in ("test.csv", "mnist_test.csv"):
        path = _find(folder, name)
        if path:
            test_x, test_y = read_csv(path)
            if test_y is not None:
                test = test_x, test_y
                sources.append(path)
                break
            print(f"[data] {path} has no labels (like Kaggle's test.csv): not used as the test split",
                  file=sys.stderr)
    if test is None:
        if len(train_x) <= 10000:
            raise DatasetError(f"{train_path} has {len(train_x)} rows and there is no labelled test CSV beside it: "
                               f"holding out 10,000 as the test split would leave none to train on; add a labelled "
                               f"test.csv (label column + 784 pixels)")
        print(f"[data] no labelled test CSV beside {train_path}: holding out 10,000 training images as the test "
              f"split", file=sys.stderr)
        order = np.random.default_rng(12345).permutation(len(train_x))
        test = train_x[order[:10000]], train_y[order[:10000]]
        train_x, train_y = train_x[order[10000:]], train_y[order[10000:]]

    def to_tensors(x, y):
        return torch.from_numpy(x.reshape(-1, 1, 28, 28).copy()), torch.from_numpy(y.copy())
    return Splits(*to_tensors(train_x, train_y), *to_tensors(*test))


def _cifar_bin_splits(folder: Path, sources: list[Path]) -> Splits:
    parts = []
    for base in CIFAR_BIN:
        path = _find(folder, base)
        sources.append(path)
        raw = _read_bytes(path)
        if len(raw) == 0 or len(raw) % 3073:
            raise DatasetError(f"{path} is truncated or corrupt: {len(raw)} bytes is not a whole number of "
                               f"3,073-byte records; delete it and download it again")
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
        parts.append((records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)))
    tx = np.concatenate([p[0] for p in parts[:5]])
    ty = np.concatenate([p[1] for p in parts[:5]])
    return Splits(*(torch.from_numpy(a.copy()) for a in (tx, ty, parts[5][0], parts[5][1])))


class CifarUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 python layout (pickled dicts of lists, bytes and numpy arrays) and nothing else: any other
    global a pickle names (os.system, builtins.eval, ...) is refused instead of called, so a crafted data_batch_1
    runs no code. The binary layout, tried first, needs no unpickling at all."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which a CIFAR-10 batch never holds "
                                     f"(refused: unpickling it could run code)")


def _cifar_py_splits(folder: Path, sources: list[Path]) -> Splits:
    parts = []
    for base in CIFAR_PY:
        path = _find(folder, base)
        sources.append(path)
        try:
            batch = CifarUnpickler(io.BytesIO(_read_bytes(path)), encoding="bytes").load()
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
            raise DatasetError(f"{path} is truncated or corrupt ({err!r}); delete it and download it again") from None
        parts.append((x, y))
    tx = np.concatenate([p[0] for p in parts[:5]])
    ty = np.concatenate([p[1] for p in parts[:5]])
    return Splits(*(torch.from_numpy(a.copy()) for a in (tx, ty, parts[5][0], parts[5][1])))


# ---------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Layout:
    """Files of one on-disk layout: `files` (each plain, .gz or .xz) in `folder` under a data directory, decoded by
    `reader(folder, sources) -> Splits`."""
    folder: str
    files: tuple[str, ...]
    reader: Callable[[Path, list], Splits]


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the harness knows about a dataset; config, data, augmentation, workers and the benchmark read it."""
    name: str
    folder: str                   # torchvision's folder name under the data directory
    shape: tuple[int, int, int]   # C, H, W of one image
    mean: tuple[float, ...]       # per channel, of pixels scaled to [0, 1] (the usual published values)
    std: tuple[float, ...]
    classes: tuple[str, ...]      # class names by label
    layouts: tuple[Layout, ...]   # the file layouts read, first complete one wins
    augmentation: str             # the kind trial/augment.py applies: "affine" (28x28 sets) or "crop_flip"
    background: int               # raw pixel value of the background: what pixels shifted into the image take
    download_folder: str          # where torchvision's downloader is pointed, under the data directory
    mirror_safe: bool = True      # a horizontal mirror keeps every image's class (not for digits: a mirrored 2 is no
                                  # digit), so flip augmentation and mirror test-time augmentation may be used
    imbalance: float = 1.0        # largest / smallest class in training (a dataset given by path); above
                                  # folder.IMBALANCE_FLAG a report should lead with balanced accuracy
    skipped_images: int = 0       # files left out because they do not decode (skip_bad_images)

    @property
    def from_path(self) -> bool:
        """A dataset given by path (trial/folder.py), not a table entry."""
        return self.name not in INFO

    def metrics(self) -> dict:
        """What a run's final metrics say about a dataset given by path (nothing for a table entry)."""
        if not self.from_path:
            return {}
        return {"image_size": self.shape[1], "num_classes": len(self.classes), "class_imbalance": self.imbalance,
                "skipped_images": self.skipped_images}


_CIFAR_LAYOUTS = tuple(Layout(prefix + sub, files, reader) for prefix in ("CIFAR10/", "")
                       for sub, files, reader in (("cifar-10-batches-bin", CIFAR_BIN, _cifar_bin_splits),
                                                  ("cifar-10-batches-py", CIFAR_PY, _cifar_py_splits)))
INFO = {
    "mnist": DatasetInfo("mnist", "MNIST", (1, 28, 28), (0.1307,), (0.3081,), tuple(str(i) for i in range(10)),
                         (Layout("MNIST/raw", IDX_FILES, _idx_splits), Layout("MNIST", ("train.csv",), _csv_splits),
                          Layout("MNIST", ("mnist_train.csv",), _csv_splits)), "affine", 0, "", mirror_safe=False),
    "fmnist": DatasetInfo("fmnist", "FashionMNIST", (1, 28, 28), (0.2860,), (0.3530,),
                          ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                           "Ankle boot"), (Layout("FashionMNIST/raw", IDX_FILES, _idx_splits),), "affine", 0, ""),
    "cifar10": DatasetInfo("cifar10", "CIFAR10", (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
                           _CIFAR_LAYOUTS, "crop_flip", 0, "CIFAR10"),
}


def _locate(name: str, dirs: list[Path]):
    for root in dirs:
        for layout in INFO[name].layouts:
            folder = root / layout.folder
            if folder.is_dir() and all(_find(folder, f) for f in layout.files):
                return folder, layout.files, layout.reader
    return None


def _missing_message(name: str, dirs: list[Path], why: str) -> str:
    layouts = "; ".join(f"<dir>/{lay.folder}/{{{','.join(lay.files)}}}[.gz|.xz]" for lay in INFO[name].layouts)
    return (f"dataset {name!r} not found. Searched: {', '.join(str(d) for d in dirs)}. Expected one of: {layouts}. "
            f"{why}Fix: pass --data-dir DIR (or set CNNSEARCH_DATA=DIR) pointing at a directory with these files.")


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd
    cls = getattr(tvd, INFO[name].folder)   # torchvision's class has the folder's name: MNIST, FashionMNIST, CIFAR10
    target = root / INFO[name].download_folder
    target.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(str(target), train=train, download=True)


def _source_key(name: str, files: list[Path]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}:{name}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cache_path(name: str, folder: Path, files) -> Path:
    return cache_dir() / f"{name}-{_source_key(name, [_find(folder, f) for f in files])}.pt"


def cache_file(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache file `load` reads or writes for the files it would find (None when there are none); it exists once
    they have been decoded."""
    found = _locate(info(name).name, candidate_dirs(data_dir))
    return _cache_path(name, found[0], found[1]) if found else None


def available(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The datasets whose files are complete where `load` looks."""
    return [name for name in INFO if _locate(name, candidate_dirs(data_dir))]


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool | None = None,
         options=None) -> Splits:
    """The dataset as uint8 images [N, C, H, W] and int64 labels [N] (train and test), from the cache when it is
    there, decoding the files (once, under a file lock) when not; downloads with torchvision where allowed. A path
    is read by trial/folder.py under `options` (a folder.FolderOptions), its train split without a given val/.
    Raises DatasetError for an unknown name, missing files (naming where it looked and the layouts it reads) or
    corrupt files."""
    if name not in INFO:
        if not Path(name).expanduser().exists():
            info(name)   # raises, naming the valid datasets
        from . import folder
        return folder.load(name, options).splits
    dirs = candidate_dirs(data_dir)
    found = _locate(name, dirs)
    if found is None:
        if download is None:
            download = os.environ.get("CNNSEARCH_NO_DOWNLOAD", "") in ("", "0")
        if not download:
            raise DatasetError(_missing_message(name, dirs, "Download is off. "))
        try:
            _download(name, dirs[0])
        except Exception as err:  # no network, no permission: say so with the layout we expected
            raise DatasetError(_missing_message(name, dirs, f"Download into {dirs[0]} failed ({err}). ")) from None
        found = _locate(name, dirs)
        if found is None:
            raise DatasetError(_missing_message(name, dirs, "Downloaded files were not where expected. "))
    folder, files, reader = found
    cache = _cache_path(name, folder, files)
    splits = _read_cache(cache)
    if splits is not None:
        return splits
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(str(cache) + ".lock"):
        splits = _read_cache(cache)   # another process may have written it while we waited
        if splits is not None:
            return splits
        for stale in cache.parent.glob(f"{cache.stem}.tmp*"):   # a writer killed mid-write (we hold the lock now)
            stale.unlink(missing_ok=True)
        start = time.perf_counter()
        splits = reader(folder, [])
        _validate(name, splits, folder)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(splits.__dict__, tmp)
        os.replace(tmp, cache)
        print(f"[data] decoded {name} from {folder} in {time.perf_counter() - start:.1f}s; cached at {cache}",
              file=sys.stderr)
    return splits


def _read_cache(path: Path) -> Splits | None:
    if not path.is_file():
        return None
    try:
        return Splits(**torch.load(path, weights_only=True))
    except Exception as err:  # a half-written or damaged cache: decode again rather than fail
        print(f"[data] ignoring unreadable cache {path} ({err}); decoding again", file=sys.stderr)
        return None


def _validate(name: str, s: Splits, folder: Path) -> None:
    shape = INFO[name].shape
    for x, y, split in ((s.train_x, s.train_y, "train"), (s.test_x, s.test_y, "test")):
        if tuple(x.shape[1:]) != shape or len(x) != len(y) or len(x) == 0:
            raise DatasetError(f"{folder}: {split} split has images {tuple(x.shape)} and {len(y)} labels; "
                               f"expected [N, {', '.join(map(str, shape))}] and N labels")
        last = len(INFO[name].classes) - 1
        if int(y.min()) < 0 or int(y.max()) > last:
            raise DatasetError(f"{folder}: {split} labels must lie in 0..{last}, found {int(y.min())}..{int(y.max())}")


# ---------------------------------------------------------------------------------------------------- splits on device
@dataclass
class DeviceData:
    """Normalised float images and labels on the training device; validation carved from train, test kept apart."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: DatasetInfo


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices into a training split of n images: int64 [n - val_size] and [val_size], drawn with
    `seed` (the same for every training seed, so every run validates on the same images). Raises DatasetError when
    val_size leaves no training image."""
    if val_size >= n:
        raise DatasetError(f"val_size {val_size} leaves no training images out of {n}; lower val_size")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


class Normalize(nn.Module):
    """Raw pixel values (any dtype, 0..255, [N, C, H, W]) -> float32 model input (x - mean) / std per channel, with
    the dataset table's mean and std. The one place the normalisation is defined: training data, the background fill
    of augmentation and exported models all go through it."""

    def __init__(self, ds: DatasetInfo):
        super().__init__()
        self.register_buffer("mean", torch.tensor(ds.mean).view(1, -1, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(ds.std).view(1, -1, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def normalise(x: torch.Tensor, ds: DatasetInfo, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 images [N, C, H, W] -> normalised float32 images on `device`."""
    return Normalize(ds).to(device)(x.to(device, non_blocking=True))


def denormalise(x: torch.Tensor, ds: DatasetInfo) -> torch.Tensor:
    """The inverse of `normalise`: normalised float images [N, C, H, W] -> uint8 pixels on the CPU (for figures)."""
    norm = Normalize(ds).to(x.device)
    return (x.float() * norm.std + norm.mean).round().clamp(0, 255).to(torch.uint8).cpu()


@functools.cache
def background_fill(ds: DatasetInfo, device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalised value of the dataset's background pixel, float32 [C]: what augmentation fills with (computed
    once per dataset and device)."""
    return normalise(torch.full((1, ds.shape[0], 1, 1), ds.background), ds, device).flatten()


def prepare(name: str, val_size: int, split_seed: int, device: torch.device, train_subset: int = 0,
            data_dir=None, download=None, with_test: bool = True, options=None) -> DeviceData:
    """The dataset on `device`, normalised: train (`train_subset` images when not 0) and validation carved from the
    training split with `split_seed`, test apart (empty when `with_test` is False). A path (trial/folder.py, under
    `options`, a folder.FolderOptions) validates on its val/ split when it has one, else on a stratified draw of at
    most val_size images. Raises DatasetError for missing or corrupt files and for a val_size that leaves no
    training image."""
    if name not in INFO:
        return _prepare_path(name, val_size, split_seed, device, train_subset, with_test, options)
    s = load(name, data_dir, download)
    ds = INFO[name]
    train_idx, val_idx = split_indices(len(s.train_x), val_size, split_seed)
    if train_subset:
        train_idx = train_idx[:train_subset]
    test_x = normalise(s.test_x, ds, device) if with_test else s.test_x[:0].float()
    return DeviceData(normalise(s.train_x[train_idx], ds, device), s.train_y[train_idx].to(device),
                      normalise(s.train_x[val_idx], ds, device), s.train_y[val_idx].to(device),
                      test_x, s.test_y.to(device) if with_test else s.test_y[:0], ds)


def _prepare_path(name: str, val_size: int, split_seed: int, device: torch.device, train_subset: int,
                  with_test: bool, options) -> DeviceData:
    from . import folder
    fd = folder.load(name, options)
    ds, s = fd.info, fd.splits
    if fd.val_x is not None:
        train_idx, val_x, val_y = torch.arange(len(s.train_x)), fd.val_x, fd.val_y
        note = f"validation {len(val_y)} images of the dataset's own val split"
    else:
        train_idx, val_idx, note = folder.carve_validation(s.train_y, fd.train_groups, val_size, split_seed)
        val_x, val_y = s.train_x[val_idx], s.train_y[val_idx]
    if train_subset:
        train_idx = train_idx[:train_subset]
    if torch.device(device).type == "cpu":   # refused in one line, not killed for memory (a GPU holds its own copies)
        folder.check_training_memory(len(train_idx), len(val_y), len(s.test_y) if with_test else 0, ds.shape)
    print(f"[data] {name}: train {len(train_idx)}, {note}, test {len(s.test_y) if with_test else 'not loaded'}; "
          f"{ds.shape[0]}x{ds.shape[1]}x{ds.shape[2]}, {len(ds.classes)} classes", file=sys.stderr)
    test_x = normalise(s.test_x, ds, device) if with_test else s.test_x[:0].float()
    return DeviceData(normalise(s.train_x[train_idx], ds, device), s.train_y[train_idx].to(device),
                      normalise(val_x, ds, device), val_y.to(device),
                      test_x, s.test_y.to(device) if with_test else s.test_y[:0], ds)


def main(argv: list[str] | None = None) -> int:
    """`python -m trial.data [NAME | PATH ...] [--KEY VALUE ...]`: a table name's split sizes, a path's audit (under
    the config keys given, checked as the trial checks them); exit 1 when a dataset is refused or missing."""
    import argparse

    from . import folder
    from .config import ConfigError, normalize
    p = argparse.ArgumentParser(prog="python -m trial.data", description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="*", help=f"names ({', '.join(INFO)}; default: all) or paths")
    for f in dataclasses.fields(folder.FolderOptions):
        p.add_argument(f"--{f.name}", f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                       metavar=type(f.default).__name__.upper())
    args = p.parse_args(argv)
    try:
        keys = normalize({f.name: getattr(args, f.name) for f in dataclasses.fields(folder.FolderOptions)
                          if getattr(args, f.name) is not None})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = folder.FolderOptions(**keys)
    status = 0
    for dataset in args.datasets or list(INFO):
        t0 = time.perf_counter()
        try:
            if dataset in INFO:
                sp = load(dataset)
                print(f"{dataset}: train {tuple(sp.train_x.shape)} test {tuple(sp.test_x.shape)} "
                      f"in {time.perf_counter() - t0:.2f}s")
                continue
            found = folder.audit(dataset, options)
        except DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        print("\n".join(found.lines()))
        status = status or int(not found.ok)
    return status


if __name__ == "__main__":
    sys.exit(main())
