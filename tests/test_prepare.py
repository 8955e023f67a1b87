"""`experiments.workers prepare` against a real SSH worker (a private sshd on 127.0.0.2): the requirements are installed
with the worker's Python and the data cache is decoded there once; each failure says why.

The worker's Python is a venv of its own whose `.pth` file adds this test venv's site-packages (`--system-site-packages`
from inside a venv would add the base interpreter's, without torch), so the pip step finds every pin satisfied and
needs no network. One extra requirement, a wheel built here, is not installed anywhere: pip installing it into the
worker's venv shows which environment the pip step ran in. The sshd gives every session its own CNNSEARCH_CACHE and
TMPDIR, as a worker's environment would, so nothing lands in this user's ~/.cache.
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests import sshd, tiny_data
from trial import REPO, data

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(sshd.available() is not None, reason=str(sshd.available()))]
PROBE = "cnnsearch_prepare_probe"


def probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel that no environment here has."""
    files = {f"{PROBE}/__init__.py": "VERSION = '0.1'\n",
             f"{PROBE}-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: cnnsearch-prepare-probe\nVersion: 0.1\n",
             f"{PROBE}-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n"}
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()}"
              f",{len(text.encode())}" for name, text in files.items()]
    files[f"{PROBE}-0.1.dist-info/RECORD"] = "\n".join(record + [f"{PROBE}-0.1.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{PROBE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


def worker_venv(path: Path, see_test_packages: bool = True) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    if see_test_packages:
        site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
        (site / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepare")
    cache, worker_tmp = tmp / "worker-cache", tmp / "worker-tmp"
    worker_tmp.mkdir()
    with sshd.private_sshd(tmp / "sshd", env={"CNNSEARCH_CACHE": str(cache), "TMPDIR": str(worker_tmp)}) \
            as (host, port, key):
        tiny_data.write_idx_dataset(tmp / "data", "MNIST", seed=3)
        tiny_data.write_idx_dataset(tmp / "data", "FashionMNIST", seed=5)
        w = {"host": host, "port": port, "user": getpass.getuser(), "key_file": str(key),
             "python": str(worker_venv(tmp / "venv"))}
        yield {"w": w, "data": tmp / "data", "cache": cache, "tmp": worker_tmp, "venv": tmp / "venv",
               "wheel": probe_wheel(tmp)}


def run_prepare(tmp_path, data_dir, entries, *args):
    path = tmp_path / "workers.yml"
    path.write_text(yaml.safe_dump({"data_dir": str(data_dir), "workers": list(entries)}))
    done = subprocess.run([sys.executable, "-m", "experiments.launch.workers", "prepare", str(path), "--known-hosts",
                           str(tmp_path / "known_hosts"), *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    return done.returncode, done.stdout.strip().splitlines(), done.stderr


def test_prepare_installs_into_the_workers_python_and_decodes_once(worker, tmp_path, monkeypatch):
    extra = tmp_path / "extra.txt"
    extra.write_text(f"-r {REPO / 'requirements.txt'}\n{worker['wheel']}   # not installed anywhere yet\n")
    args = ["--requirements", str(extra), "--dataset", "fmnist", "mnist"]
    rc, lines, err = run_prepare(tmp_path, worker["data"], [worker["w"]], *args)
    assert rc == 0, (lines, err)
    assert len(lines) == 1 and lines[0].startswith("OK"), lines
    line = lines[0]
    assert f"pip in {worker['venv']}: installed 1 (cnnsearch-prepare-probe-0.1)" in line
    assert "fmnist 600+200 decoded" in line and "mnist 600+200 decoded" in line and "cifar10" not in line
    assert f"torch {metadata.version('torch')}, nni {metadata.version('nni')}" in line

    # pip ran with the worker's Python: the wheel is in its venv, and only there
    site = Path(sysconfig.get_paths(vars={"base": str(worker["venv"]), "platbase": str(worker["venv"])})["purelib"])
    assert (site / PROBE / "__init__.py").is_file() and (site / f"{PROBE}-0.1.dist-info").is_dir()
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("cnnsearch-prepare-probe")

    # the cache is where a trial on that worker looks (same key: same files, same code) and holds the right tensors
    monkeypatch.setenv("CNNSEARCH_CACHE", str(worker["cache"]))
    written = sorted(p.name for p in worker["cache"].glob("*.pt"))
    expected = {name: data.cache_file(name, worker["data"]) for name in ("fmnist", "mnist")}
    assert written == sorted(p.name for p in expected.values())
    for name, seed in (("mnist", 3), ("fmnist", 5)):
        cached = torch.load(expected[name], weights_only=True)
        for split, n, s in (("train", 600, seed), ("test", 200, seed + 1)):
            x, y = tiny_data.images(n, (28, 28), s)
            assert torch.equal(cached[f"{split}_x"], torch.from_numpy(x[:, None]))
            assert torch.equal(cached[f"{split}_y"], torch.from_numpy(y.astype(np.int64)))
    assert not list(worker["tmp"].iterdir()), "the upload's temporary directory was left on the worker"

    # again: nothing to install, nothing to decode, the cache untouched
    stamps = {p: p.stat().st_mtime_ns for p in expected.values()}
    rc, lines, err = run_prepare(tmp_path, worker["data"], [worker["w"]], *args)
    assert rc == 0, (lines, err)
    assert "installed nothing" in lines[0] and lines[0].count("already cached") == 2, lines
    assert stamps == {p: p.stat().st_mtime_ns for p in expected.values()}


def test_each_failure_has_its_reason(worker, tmp_path):
    w = worker["w"]
    other_key = sshd.keygen(tmp_path / "other_key")
    no_pip = worker_venv(tmp_path / "no-pip", see_test_packages=False)
    rc, lines, _ = run_prepare(tmp_path, worker["data"],
                               [{**w, "key_file": str(other_key)}, {**w, "python": "/nonexistent/bin/python3"},
                                {**w, "python": str(no_pip)}])
    assert rc == 1 and len(lines) == 3, lines
    wrong_key, no_python, pipless = lines
    assert wrong_key.startswith("FAIL") and "ssh failed" in wrong_key and "Permission denied" in wrong_key
    assert no_python.startswith("FAIL") and "/nonexistent/bin/python3 not found" in no_python
    assert pipless.startswith("FAIL") and f"pip is not installed for {no_pip}" in pipless

    rc, lines, _ = run_prepare(tmp_path, tmp_path / "no-data-here", [w])
    assert rc == 1 and lines[0].startswith("FAIL")
    assert f"data directory {tmp_path / 'no-data-here'} does not exist on the worker" in lines[0]

    missing = tmp_path / "extra.txt"
    missing.write_text(f"{tmp_path / 'gone' / (PROBE + '-0.1-py3-none-any.whl')}\n")
    rc, lines, err = run_prepare(tmp_path, worker["data"], [w], "--requirements", str(missing))
    assert rc == 1 and lines[0].startswith("FAIL")
    assert "pip install -r requirements.txt" in lines[0] and "failed: ERROR" in lines[0] and "gone" in lines[0]
    assert "pip's last lines" in err

    rc, lines, _ = run_prepare(tmp_path, worker["data"], [w], "--dataset", "cifar10")
    assert rc == 1 and lines[0].startswith("FAIL") and "cifar10: dataset 'cifar10' not found" in lines[0], lines
    assert not list(worker["tmp"].iterdir())
