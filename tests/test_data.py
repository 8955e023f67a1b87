"""The dataset loaders: every on-disk format, corrupt and missing files, the decode cache, splits and normalisation.

Every test writes tiny datasets with tests/tiny_data.py and keeps its cache in a private directory (`isolated_env`).

    .venv/bin/pytest tests/test_data.py -q
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests import tiny_data
from tests.conftest import REPO
from trial import data
from trial.data import DatasetError


def expected_idx(n: int, seed: int):
    x, y = tiny_data.images(n, (28, 28), seed)
    return torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype(np.int64))


def expected_cifar(per_batch: int, n_test: int, seed: int = 0):
    parts = [tiny_data.images(per_batch, (3, 32, 32), seed + i) for i in range(5)]
    test_x, test_y = tiny_data.images(n_test, (3, 32, 32), seed + 5)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return (as_t(np.concatenate([p[0] for p in parts])), as_t(np.concatenate([p[1] for p in parts]).astype(np.int64)),
            as_t(test_x), as_t(test_y.astype(np.int64)))


def assert_splits_equal(s: data.Splits, train_x, train_y, test_x, test_y):
    for got, want in ((s.train_x, train_x), (s.train_y, train_y), (s.test_x, test_x), (s.test_y, test_y)):
        assert got.dtype == want.dtype
        assert tuple(got.shape) == tuple(want.shape)
        assert torch.equal(got, want)


def cache_files(env_root):
    return sorted((env_root / "cache").glob("*.pt"))


# ------------------------------------------------------------------------------------------------- formats
@pytest.mark.parametrize("ext", tiny_data.COMPRESS)
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fmnist", "FashionMNIST")])
def test_idx_formats_round_trip(isolated_env, name, folder, ext):
    root = isolated_env / "data"
    tiny_data.write_idx_dataset(root, folder, n_train=120, n_test=40, ext=ext, seed=3)
    s = data.load(name, root)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert s.train_x.shape == (120, 1, 28, 28) and s.test_x.shape == (40, 1, 28, 28)
    assert_splits_equal(s, *expected_idx(120, 3), *expected_idx(40, 4))
    assert s.train_y.min() >= 0 and s.train_y.max() <= 9


@pytest.mark.parametrize("ext", tiny_data.COMPRESS)
def test_cifar_binary_formats_round_trip(isolated_env, ext):
    root = isolated_env / "data"
    tiny_data.write_cifar_bin(root, per_batch=20, n_test=30, ext=ext, seed=1)
    s = data.load("cifar10", root)
    assert s.train_x.shape == (100, 3, 32, 32) and s.test_x.shape == (30, 3, 32, 32)
    assert_splits_equal(s, *expected_cifar(20, 30, seed=1))


@pytest.mark.parametrize("under_cifar10", [True, False], ids=["CIFAR10/cifar-10-batches-py", "cifar-10-batches-py"])
def test_cifar_python_pickle_batches(isolated_env, under_cifar10):
    root = isolated_env / "data"
    folder = tiny_data.write_cifar_py(root, per_batch=20, n_test=30, seed=2)
    if not under_cifar10:   # the layout torchvision leaves when given the data dir itself as root
        shutil.move(str(folder), str(root / "cifar-10-batches-py"))
        (root / "CIFAR10").rmdir()
    s = data.load("cifar10", root)
    assert_splits_equal(s, *expected_cifar(20, 30, seed=2))


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_mnist_csv_with_labelled_test(isolated_env, header):
    root = isolated_env / "data"
    tiny_data.write_mnist_csv(root, n_train=50, n_test=20, header=header, labelled_test=True, seed=5)
    s = data.load("mnist", root)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert_splits_equal(s, *expected_idx(50, 5), *expected_idx(20, 6))


def test_mnist_csv_kaggle_names(isolated_env):
    folder = tiny_data.write_mnist_csv(isolated_env / "data", n_train=30, n_test=10, seed=5)
    (folder / "train.csv").rename(folder / "mnist_train.csv")
    (folder / "test.csv").rename(folder / "mnist_test.csv")
    assert_splits_equal(data.load("mnist", isolated_env / "data"), *expected_idx(30, 5), *expected_idx(10, 6))


def test_mnist_csv_unlabelled_test_holds_out_10000(isolated_env):
    """Kaggle's test.csv has no labels: 10,000 rows of train.csv become the test split, the rest train."""
    root = isolated_env / "data"
    n = 10_060
    tiny_data.write_mnist_csv(root, n_train=n, n_test=5, header=True, labelled_test=False, seed=7)
    s = data.load("mnist", root)
    assert s.train_x.shape == (n - 10_000, 1, 28, 28) and s.test_x.shape == (10_000, 1, 28, 28)
    # together the two splits are exactly the rows of train.csv, each once
    x, y = expected_idx(n, 7)
    rows = lambda xs, ys: sorted(bytes([int(l)]) + img.numpy().tobytes() for img, l in zip(xs, ys))
    assert rows(torch.cat([s.train_x, s.test_x]), torch.cat([s.train_y, s.test_y])) == rows(x, y)


def test_mnist_csv_unlabelled_test_too_few_rows(isolated_env):
    root = isolated_env / "data"
    tiny_data.write_mnist_csv(root, n_train=50, n_test=5, labelled_test=False)
    with pytest.raises(DatasetError, match="train.csv"):
        data.load("mnist", root)


# ------------------------------------------------------------------------------------------------- bad files
def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 - 1])   # -1: not on a CIFAR record boundary


def _bad_magic(path):
    raw = bytearray(path.read_bytes())
    raw[:4] = b"\x13\x37\x13\x37"
    path.write_bytes(bytes(raw))


def _assert_names_file_and_fix(err: DatasetError, path):
    message = str(err)
    assert str(path) in message
    assert "delete" in message and "download" in message


@pytest.mark.parametrize("damage", [_truncate, _bad_magic], ids=["truncated", "bad-magic"])
@pytest.mark.parametrize("ext", tiny_data.COMPRESS)
def test_damaged_idx_file_raises_dataset_error(isolated_env, ext, damage):
    raw = tiny_data.write_idx_dataset(isolated_env / "data", "FashionMNIST", n_train=40, n_test=20, ext=ext)
    path = raw / f"train-images-idx3-ubyte{ext}"
    damage(path)
    with pytest.raises(DatasetError) as info:
        data.load("fmnist", isolated_env / "data")
    _assert_names_file_and_fix(info.value, path)
    assert cache_files(isolated_env) == []


def _truncate_in_header(path):
    path.write_bytes(path.read_bytes()[:10])     # magic + one of the three dimensions


@pytest.mark.parametrize("damage", [_truncate, _truncate_in_header, _bad_magic],
                         ids=["truncated", "truncated-in-header", "bad-magic"])
@pytest.mark.parametrize("ext", tiny_data.COMPRESS)
def test_damaged_plain_idx_inside_compression(isolated_env, ext, damage):
    """Whatever the compression, an IDX payload that is damaged is reported, not crashed on."""
    raw = tiny_data.write_idx_dataset(isolated_env / "data", "MNIST", n_train=40, n_test=20, ext="")
    plain = raw / "train-images-idx3-ubyte"
    damage(plain)
    path = raw / f"train-images-idx3-ubyte{ext}"
    payload = plain.read_bytes()
    plain.unlink()
    path.write_bytes(tiny_data.COMPRESS[ext](payload))
    with pytest.raises(DatasetError) as info:
        data.load("mnist", isolated_env / "data")
    _assert_names_file_and_fix(info.value, path)


@pytest.mark.parametrize("ext", tiny_data.COMPRESS)
def test_truncated_cifar_binary_raises_dataset_error(isolated_env, ext):
    folder = tiny_data.write_cifar_bin(isolated_env / "data", per_batch=10, n_test=10, ext=ext)
    path = folder / f"data_batch_3.bin{ext}"
    _truncate(path)
    with pytest.raises(DatasetError) as info:
        data.load("cifar10", isolated_env / "data")
    _assert_names_file_and_fix(info.value, path)


@pytest.mark.parametrize("damage", [_truncate, _bad_magic], ids=["truncated", "bad-magic"])
def test_damaged_cifar_pickle_raises_dataset_error(isolated_env, damage):
    folder = tiny_data.write_cifar_py(isolated_env / "data", per_batch=10, n_test=10)
    path = folder / "test_batch"
    damage(path)
    with pytest.raises(DatasetError) as info:
        data.load("cifar10", isolated_env / "data")
    _assert_names_file_and_fix(info.value, path)


@pytest.mark.parametrize("name,expected_file", [("mnist", "train-images-idx3-ubyte"),
                                                ("fmnist", "t10k-labels-idx1-ubyte"),
                                                ("cifar10", "data_batch_1.bin")])
def test_missing_data_names_directory_files_and_fix(isolated_env, name, expected_file):
    missing = isolated_env / "nowhere"
    with pytest.raises(DatasetError) as info:
        data.load(name, missing, download=False)
    message = str(info.value)
    assert str(missing) in message and expected_file in message
    assert "--data-dir" in message and "CNNSEARCH_DATA" in message


def test_incomplete_directory_is_missing(isolated_env):
    raw = tiny_data.write_idx_dataset(isolated_env / "data", "FashionMNIST", n_train=20, n_test=10)
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="not found"):
        data.load("fmnist", isolated_env / "data", download=False)


def test_cnnsearch_data_is_searched(tiny_root):
    assert data.candidate_dirs() == [tiny_root]
    assert data.load("fmnist").train_x.shape == (600, 1, 28, 28)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_download_off_never_downloads(isolated_env, monkeypatch, how):
    def no_network(*args, **kwargs):
        raise AssertionError("download attempted")
    monkeypatch.setattr(data, "_download", no_network)
    if how == "environment":    # isolated_env sets CNNSEARCH_NO_DOWNLOAD=1
        with pytest.raises(DatasetError, match="Download is off"):
            data.load("mnist", isolated_env / "nowhere")
    else:
        monkeypatch.delenv("CNNSEARCH_NO_DOWNLOAD")
        with pytest.raises(DatasetError, match="Download is off"):
            data.load("mnist", isolated_env / "nowhere", download=False)


def test_failed_download_says_where_and_why(isolated_env, monkeypatch):
    def offline(name, root):
        raise OSError("no route to host")
    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DatasetError, match="no route to host") as info:
        data.load("cifar10", isolated_env / "nowhere", download=True)
    assert "--data-dir" in str(info.value)


def test_unknown_dataset(isolated_env):
    with pytest.raises(DatasetError, match="mnist, fmnist, cifar10"):
        data.load("svhn", isolated_env)


# ------------------------------------------------------------------------------------------------- cache
def _count_reads(monkeypatch):
    calls = []
    real = data.read_idx

    def counting(path):
        calls.append(path)
        return real(path)
    monkeypatch.setattr(data, "read_idx", counting)
    return calls


def test_second_load_reads_the_cache(tiny_root, isolated_env, monkeypatch):
    calls = _count_reads(monkeypatch)
    first = data.load("fmnist")
    assert len(calls) == 4 and len(cache_files(isolated_env)) == 1
    second = data.load("fmnist")
    assert len(calls) == 4, "the second load decoded the files again"
    assert_splits_equal(second, first.train_x, first.train_y, first.test_x, first.test_y)


def test_changed_source_gives_a_new_cache_key(tiny_root, isolated_env, monkeypatch):
    data.load("mnist")
    tiny_data.write_idx_dataset(tiny_root, "MNIST", n_train=300, n_test=100, seed=9)   # same names, new content
    calls = _count_reads(monkeypatch)
    second = data.load("mnist")
    assert len(calls) == 4
    assert len(cache_files(isolated_env)) == 2
    assert_splits_equal(second, *expected_idx(300, 9), *expected_idx(100, 10))


def test_touched_source_gives_a_new_cache_key(tiny_root, isolated_env):
    data.load("fmnist")
    path = tiny_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    data.load("fmnist")
    assert len(cache_files(isolated_env)) == 2


def test_unreadable_cache_is_decoded_again(tiny_root, isolated_env, monkeypatch):
    first = data.load("fmnist")
    (cache,) = cache_files(isolated_env)
    cache.write_bytes(b"not a torch file")
    calls = _count_reads(monkeypatch)
    second = data.load("fmnist")
    assert len(calls) == 4
    assert_splits_equal(second, first.train_x, first.train_y, first.test_x, first.test_y)
    assert data._read_cache(cache) is not None, "the damaged cache was not rewritten"


# each process saves what it loaded, so the parent can compare the tensors themselves
LOADER = "import sys, torch\nfrom trial import data\ntorch.save(data.load('cifar10').__dict__, sys.argv[1])\n"


@pytest.mark.slow
def test_concurrent_loaders_decode_once_and_agree(isolated_env):
    root = isolated_env / "data"
    tiny_data.write_cifar_bin(root, per_batch=400, n_test=400, ext=".xz")   # large enough to overlap the decodes
    env = {**os.environ, "CNNSEARCH_DATA": str(root), "CNNSEARCH_CACHE": str(isolated_env / "cache"),
           "CNNSEARCH_NO_DOWNLOAD": "1", "OMP_NUM_THREADS": "1"}
    outputs = [isolated_env / f"loaded{i}.pt" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", LOADER, str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for out in outputs]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert sum("[data] decoded cifar10" in err for _, err in results) == 1, "both processes decoded"
    assert len(cache_files(isolated_env)) == 1
    assert not list((isolated_env / "cache").glob("*.tmp*")), "a temporary cache file was left behind"
    loaded = [data.Splits(**torch.load(out)) for out in outputs]
    assert_splits_equal(loaded[1], loaded[0].train_x, loaded[0].train_y, loaded[0].test_x, loaded[0].test_y)
    assert_splits_equal(loaded[0], *expected_cifar(400, 400))


# ------------------------------------------------------------------------------------------------- splits
def test_split_indices_deterministic_disjoint_complete():
    train, val = data.split_indices(1000, 100, seed=4)
    again_train, again_val = data.split_indices(1000, 100, seed=4)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    other_train, other_val = data.split_indices(1000, 100, seed=5)
    assert not torch.equal(val, other_val)


def test_split_indices_rejects_val_size_too_large():
    with pytest.raises(DatasetError, match="val_size"):
        data.split_indices(100, 100, seed=0)


@pytest.mark.parametrize("name", ["mnist", "fmnist", "cifar10"])
def test_prepare_normalises_per_dataset(tiny_root, name):
    raw = data.load(name)
    d = data.prepare(name, val_size=50, split_seed=3, device=torch.device("cpu"), train_subset=200)
    train_idx, val_idx = data.split_indices(len(raw.train_x), 50, 3)
    info = data.INFO[name]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    formula = lambda x: (x.double() / 255 - mean.double()) / std.double()
    assert d.info is info
    assert d.train_x.dtype == torch.float32 and d.train_x.shape == (200, *info.shape)
    assert d.val_x.shape == (50, *info.shape) and d.test_x.shape == (len(raw.test_x), *info.shape)
    torch.testing.assert_close(d.train_x.double(), formula(raw.train_x[train_idx[:200]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.val_x.double(), formula(raw.train_x[val_idx]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d.test_x.double(), formula(raw.test_x), rtol=1e-5, atol=1e-5)
    assert torch.equal(d.train_y, raw.train_y[train_idx[:200]]) and torch.equal(d.val_y, raw.train_y[val_idx])
    assert torch.equal(d.test_y, raw.test_y)


def test_prepare_without_test_split(tiny_root):
    d = data.prepare("fmnist", val_size=50, split_seed=0, device=torch.device("cpu"), with_test=False)
    assert len(d.test_x) == 0 and len(d.test_y) == 0 and len(d.train_x) == 550
