"""Data files are taken at their word only where the word holds: the label column found by its header name, values
checked against what the format says, and whatever cannot be used refused with one line naming the file (field cases
c07 and c07b in ../shared/field_cases, and the other members of their kind), with nothing left in the cache.

    .venv/bin/pytest tests/test_data_files.py -q
"""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from tests import tiny_data
from tests.conftest import FIELD_CASES, needs_field_cases
from tests.test_trial_cli import call_trial, read_run
from trial import data
from trial.data import DatasetError


def _digits(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 784)), np.arange(n) % 10


def _write(folder, name, pixels, labels=None, header=True, label_at=0, label_name="label", text=None):
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(pixels.shape[1])])
        if labels is not None:
            frame.insert(label_at if label_at >= 0 else frame.shape[1] + 1 + label_at, label_name, labels)
        text = frame.to_csv(index=False, header=header)
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("label_at,header", [(0, True), (-1, True), (300, True), (0, False)],
                         ids=["first", "last", "middle", "first-no-header"])
def test_the_label_column_is_found_wherever_the_header_puts_it(isolated_env, label_at, header):
    x, y = _digits(60)
    folder = isolated_env / "data" / "MNIST"
    _write(folder, "train.csv", x, y, header, label_at)
    _write(folder, "test.csv", x[:20], y[:20], header, label_at)
    splits = data.load("mnist", isolated_env / "data")
    assert np.array_equal(splits.train_y.numpy(), y)
    assert np.array_equal(splits.train_x.numpy().reshape(60, -1), x)


@needs_field_cases
@pytest.mark.parametrize("case", ["c07_csv_label_last", "c07b_csv_numeric_header_label_last"])
def test_field_case_label_in_the_last_column(isolated_env, tmp_path, case):
    """c07/c07b: the label is the last column, named 'label' (after 'pixel1..784', or after '0..783'): it used to be
    read from the first pixel column (always 0), and the run reported 100% accuracy."""
    root = FIELD_CASES / case
    splits = data.load("mnist", root)
    truth = pd.read_csv(root / "MNIST" / "train.csv")["label"].to_numpy()
    assert np.array_equal(splits.train_y.numpy(), truth) and len(np.unique(truth)) == 10
    assert splits.train_x.shape == (len(truth), 1, 28, 28)
    out = tmp_path / "out"
    proc = call_trial("--data-dir", root, "--dataset", "mnist", "--val_size", 100, "--epochs", 1, "--batch_size", 64,
                      "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    final, _ = read_run(out)
    assert final["test_accuracy"] < 0.99 and final["best_val_accuracy"] < 0.99     # no free answer any more


BAD_CSVS = {
    "label last without a header": (lambda x, y: _write_plain(np.concatenate([x, y[:, None]], 1)),
                                    "labels (the first column (no header row)) must be integers 0..9"),
    "no label column named": (lambda x, y: pd.DataFrame(np.concatenate([x, y[:, None]], 1),
                                                        columns=[f"p{i}" for i in range(785)]).to_csv(index=False),
                              "names no label column"),
    "two label columns": (lambda x, y: pd.DataFrame(np.concatenate([y[:, None], x, y[:, None]], 1), columns=[
        "label"] + [f"p{i}" for i in range(784)] + ["class"]).to_csv(index=False), "could each be the label"),
    "783 pixels": (lambda x, y: _frame(x[:, :783], y).to_csv(index=False), "783 pixel columns"),
    "pixels scaled to 0..1": (lambda x, y: _frame(x / 255.0, y).to_csv(index=False), "multiply by 255"),
    "labels outside the classes": (lambda x, y: _frame(x, y + 1).to_csv(index=False), "0..9, found values in 1..10"),
    "a cell that is not a number": (lambda x, y: _frame(x, y).to_csv(index=False).replace("\n5,", "\nfive,", 1),
                                    "'five', not a number"),
    "one label only": (lambda x, y: _frame(x, y * 0).to_csv(index=False), "the wrong column?"),
    "a ragged row": (lambda x, y: _frame(x, y).to_csv(index=False) + "1,2,3\n", None),
}


def _frame(x, y):
    frame = pd.DataFrame(x, columns=[f"pixel{i}" for i in range(x.shape[1])])
    frame.insert(0, "label", y)
    return frame


def _write_plain(rows):
    return "\n".join(",".join(str(int(v)) for v in r) for r in rows) + "\n"


@pytest.mark.parametrize("name", BAD_CSVS)
def test_a_csv_that_cannot_be_used_as_it_is_is_refused_in_one_line(isolated_env, name):
    make, words = BAD_CSVS[name]
    x, y = _digits(120)
    folder = isolated_env / "data" / "MNIST"
    _write(folder, "train.csv", None, text=make(x, y))
    _write(folder, "test.csv", x[:20], y[:20])
    with pytest.raises(DatasetError) as info:
        data.load("mnist", isolated_env / "data")
    message = str(info.value)
    assert "\n" not in message and "train.csv" in message, message
    assert words is None or words in message, message
    assert not list((isolated_env / "cache").glob("*.pt")), "a refused file left a cache behind"


def test_an_unlabelled_train_csv_is_refused_and_an_unlabelled_test_csv_is_skipped(isolated_env, capsys):
    x, y = _digits(60)
    folder = isolated_env / "data" / "MNIST"
    _write(folder, "train.csv", x)
    with pytest.raises(DatasetError, match="no label column"):
        data.load("mnist", isolated_env / "data")
    _write(folder, "train.csv", x, y)
    _write(folder, "test.csv", x[:10])
    with pytest.raises(DatasetError, match="no labelled test CSV"):   # 60 rows cannot spare 10,000 for a test
        data.load("mnist", isolated_env / "data")
    assert "has no labels" in capsys.readouterr().err


def test_a_gzipped_csv_is_read(isolated_env):
    x, y = _digits(40)
    folder = isolated_env / "data" / "MNIST"
    folder.mkdir(parents=True)
    for name, rows in (("train.csv.gz", slice(None)), ("test.csv.gz", slice(0, 10))):
        with gzip.open(folder / name, "wt") as fh:
            fh.write(_frame(x[rows], y[rows]).to_csv(index=False))
    assert np.array_equal(data.load("mnist", isolated_env / "data").train_y.numpy(), y)


# ------------------------------------------------------------------------------------------ binary formats
def test_idx_images_and_labels_of_different_counts(isolated_env):
    root = isolated_env / "data"
    folder = tiny_data.write_idx_dataset(root, "MNIST", n_train=50, n_test=20)
    labels = folder / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    raw = raw[:4] + (49).to_bytes(4, "big") + raw[8:-1]       # a consistent header, one label short
    labels.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match="do not match") as info:
        data.load("mnist", root)
    assert "\n" not in str(info.value)


def test_idx_labels_outside_the_classes(isolated_env):
    root = isolated_env / "data"
    folder = tiny_data.write_idx_dataset(root, "FashionMNIST", n_train=50, n_test=20)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8] = 10
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match=r"labels must lie in 0..9, found 0..10"):
        data.load("fmnist", root)


def test_cifar_record_of_the_wrong_length(isolated_env):
    root = isolated_env / "data"
    folder = tiny_data.write_cifar_bin(root, per_batch=10, n_test=10)
    batch = next(folder.glob("data_batch_3*"))
    import lzma
    raw = lzma.decompress(batch.read_bytes())
    batch.write_bytes(lzma.compress(raw[:-5]))
    with pytest.raises(DatasetError, match="3,073-byte records") as info:
        data.load("cifar10", root)
    assert "data_batch_3" in str(info.value)


def test_an_unreadable_file(isolated_env):
    root = isolated_env / "data"
    folder = tiny_data.write_idx_dataset(root, "MNIST", n_train=50, n_test=20)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DatasetError, match="truncated or corrupt") as info:
        data.load("mnist", root)
    assert "train-images" in str(info.value)
    assert not list((isolated_env / "cache").glob("*.pt"))


def test_the_trial_says_it_in_one_line(isolated_env, tmp_path):
    x, y = _digits(120)
    folder = tmp_path / "bad" / "MNIST"
    _write(folder, "train.csv", None, text=_frame(x / 255.0, y).to_csv(index=False))
    proc = call_trial("--data-dir", tmp_path / "bad", "--dataset", "mnist", "--val_size", 20, "--output-dir",
                      tmp_path / "out")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.csv" in lines[0] and "0..255" in lines[0], proc.stderr
    assert json.loads((tmp_path / "out" / "trial.json").read_text())["sampled_params"] == {}
