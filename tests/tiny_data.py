"""Write tiny datasets in the real on-disk formats (IDX, CIFAR-10 binary and pickle batches, Kaggle CSV).

Images are class-dependent patterns plus noise, so a model can learn them in a few steps; the files are byte-for-byte
the layouts the loaders read from ../shared/data, so tests exercise the real readers.
"""
from __future__ import annotations

import atexit
import gzip
import lzma
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

COMPRESS = {"": lambda b: b, ".gz": lambda b: gzip.compress(b, mtime=0), ".xz": lzma.compress}


def images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, *shape)).astype(np.int32)
    h = shape[-2]
    for i, y in enumerate(labels):                 # a bright band whose row encodes the class
        row = 2 + int(y) * (h - 4) // 10
        x[i, ..., row:row + 2, :] += 180
    return np.clip(x, 0, 255).astype(np.uint8), labels


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx_dataset(root: Path, folder: str = "FashionMNIST", n_train: int = 600, n_test: int = 200,
                      ext: str = ".gz", seed: int = 0) -> Path:
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = images(n, (28, 28), s)
        (raw / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(COMPRESS[ext](idx_bytes(x)))
        (raw / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(COMPRESS[ext](idx_bytes(y)))
    return raw


def write_cifar_bin(root: Path, per_batch: int = 100, n_test: int = 100, ext: str = ".xz", seed: int = 0) -> Path:
    folder = Path(root) / "CIFAR10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = images(n_test if name == "test_batch" else per_batch, (3, 32, 32), seed + i)
        records = np.concatenate([y[:, None], x.reshape(len(x), -1)], axis=1).astype(np.uint8)
        (folder / f"{name}.bin{ext}").write_bytes(COMPRESS[ext](records.tobytes()))
    return folder


def write_cifar_py(root: Path, per_batch: int = 100, n_test: int = 100, seed: int = 0) -> Path:
    folder = Path(root) / "CIFAR10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = images(n_test if name == "test_batch" else per_batch, (3, 32, 32), seed + i)
        batch = {b"data": x.reshape(len(x), -1), b"labels": [int(v) for v in y]}
        (folder / name).write_bytes(pickle.dumps(batch))
    return folder


def write_mnist_csv(root: Path, n_train: int = 600, n_test: int = 200, header: bool = True,
                    labelled_test: bool = True, seed: int = 0) -> Path:
    folder = Path(root) / "MNIST"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, s, labelled in (("train.csv", n_train, seed, True), ("test.csv", n_test, seed + 1, labelled_test)):
        x, y = images(n, (28, 28), s)
        rows = x.reshape(n, -1).astype(int)
        if labelled:
            rows = np.concatenate([y[:, None].astype(int), rows], axis=1)
        lines = [",".join(["label"] * labelled + [f"pixel{i}" for i in range(784)])] if header else []
        lines += [",".join(map(str, r)) for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


_WRITTEN: dict[tuple[int, int], Path] = {}     # (n_train, n_test) -> the files write_all wrote first, to copy


def write_all(root: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """MNIST and Fashion-MNIST as gzipped IDX, CIFAR-10 as xz binary batches: the layout of ../shared/data.

    The files are written once per process and size (compressing CIFAR-10's batches with xz takes seconds), then
    copied: the same bytes, and each caller owns its copy."""
    if (n_train, n_test) not in _WRITTEN:
        first = Path(tempfile.mkdtemp(prefix="tiny_data-"))
        atexit.register(shutil.rmtree, first, ignore_errors=True)
        write_idx_dataset(first, "MNIST", n_train, n_test)
        write_idx_dataset(first, "FashionMNIST", n_train, n_test)
        write_cifar_bin(first, n_train // 5, n_test)
        _WRITTEN[n_train, n_test] = first
    shutil.copytree(_WRITTEN[n_train, n_test], root, dirs_exist_ok=True)
    return Path(root)
