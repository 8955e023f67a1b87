"""The worker check against a real SSH worker (a private sshd on 127.0.0.2): a good worker passes; a wrong key, a
missing Python, missing data and a version mismatch each fail with their reason."""
from __future__ import annotations

import getpass
import subprocess
import sys

import pytest
import yaml

from tests import sshd, tiny_data

pytestmark = [pytest.mark.ssh, pytest.mark.skipif(sshd.available() is not None, reason=str(sshd.available()))]


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sshd")
    with sshd.private_sshd(tmp / "sshd") as (host, port, key):
        data = tiny_data.write_all(tmp / "data")
        yield {"host": host, "port": port, "user": getpass.getuser(), "key_file": str(key),
               "python": sys.executable}, data, tmp


def run_check(tmp_path, data_dir, *entries):
    path = tmp_path / "workers.yml"
    path.write_text(yaml.safe_dump({"data_dir": str(data_dir), "workers": list(entries)}))
    done = subprocess.run([sys.executable, "-m", "experiments.launch.workers", "check", str(path), "--known-hosts",
                           str(tmp_path / "known_hosts")], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout.strip().splitlines()


def test_a_good_worker_passes(worker, tmp_path):
    w, data, _ = worker
    rc, lines = run_check(tmp_path, data, w)
    assert rc == 0, lines
    assert lines[0].startswith("OK") and "torch 2." in lines[0] and "data: cifar10, fmnist, mnist" in lines[0]


def test_each_failure_has_its_reason(worker, tmp_path):
    w, data, tmp = worker
    other_key = sshd.keygen(tmp_path / "other_key")
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    rc, lines = run_check(tmp_path, data,
                          {**w, "key_file": str(other_key)},
                          {**w, "python": "/nonexistent/bin/python3"},
                          {**w, "python": str(bare / "bin" / "python")},
                          w)
    assert rc == 1
    wrong_key, no_python, mismatch, good = lines
    assert wrong_key.startswith("FAIL") and "ssh failed" in wrong_key and "Permission denied" in wrong_key
    assert no_python.startswith("FAIL") and "/nonexistent/bin/python3 not found" in no_python
    assert mismatch.startswith("FAIL") and "torch not installed (manager has 2." in mismatch
    assert good.startswith("OK")
    rc, lines = run_check(tmp_path, tmp_path / "no-data-here", w)
    assert rc == 1 and "data directory" in lines[0] and "is missing" in lines[0]
