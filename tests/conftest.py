"""Shared fixtures: tiny datasets in the real formats, an isolated data cache, and the real data where present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import tiny_data
from trial import REPO

SHARED_DATA = Path(os.environ.get("CNNSEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))
# inputs users brought (../shared/field_cases/README.md); each case is a test, skipped with the reason where absent
FIELD_CASES = REPO.parent / "shared" / "field_cases"
needs_field_cases = pytest.mark.skipif(not FIELD_CASES.is_dir(), reason=f"{FIELD_CASES} is absent")


SLOW_KINDS = ("nni", "ssh", "netns", "browser")


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, the fast tier's command) each worker gets its share of the cores: torch's threads
    here and OMP_NUM_THREADS for the trials it starts, so N workers do not each start a thread per core."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def pytest_collection_modifyitems(items):
    """A test of a slow kind is in the slow tier: `-m "not slow"` leaves out every one of them."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module of tiny-batch tests (threads only add overhead there, and other tests may share
    the CPU); the count is restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """A private cache and no downloads: tests never touch ~/.cache or the network."""
    monkeypatch.setenv("CNNSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNSEARCH_NO_DOWNLOAD", "1")
    monkeypatch.delenv("CNNSEARCH_DATA", raising=False)
    return tmp_path


@pytest.fixture
def tiny_root(isolated_env, monkeypatch):
    """All three datasets, tiny, in the layouts of ../shared/data; CNNSEARCH_DATA points at them."""
    root = tiny_data.write_all(isolated_env / "data")
    monkeypatch.setenv("CNNSEARCH_DATA", str(root))
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set CNNSEARCH_SHARED_DATA to run this test)")
    return SHARED_DATA
