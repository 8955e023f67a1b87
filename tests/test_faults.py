"""Faults injected for real: processes this test starts are sent SIGKILL by their pid at the worst moment, and what
they leave behind is checked: the data cache, a trial's resume state and outputs, and the next run.

    .venv/bin/pytest tests/test_faults.py -q
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from tests import tiny_data
from tests.conftest import REPO
from tests.nni_helpers import wait_until
from trial import data


def test_a_decoder_killed_mid_write_leaves_no_corrupt_cache(isolated_env, tmp_path):
    """Two decoders of one dataset: the first is killed (SIGKILL) halfway through writing the cache, while it holds
    the lock; the second, waiting on the lock, then decodes, finds no cache (only the dead writer's temporary file,
    which it removes) and writes a whole one."""
    root = isolated_env / "data"
    tiny_data.write_idx_dataset(root, "MNIST", n_train=300, n_test=50)
    env = {**os.environ, "CNNSEARCH_CACHE": str(isolated_env / "cache"), "CNNSEARCH_NO_DOWNLOAD": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # the first decoder writes half of the cache file, then stalls: the moment to kill it
    stalls = textwrap.dedent(f"""
        import time, torch
        from trial import data
        def half_then_stall(obj, path):
            with open(path, "wb") as fh:
                fh.write(b"PK" + b"0" * 4096)
                fh.flush()
            time.sleep(600)
        torch.save = half_then_stall
        data.load("mnist", {str(root)!r})
    """)
    first = subprocess.Popen([sys.executable, "-c", stalls], env=env, cwd=REPO)
    try:
        tmp = wait_until(lambda: list((isolated_env / "cache").glob("mnist-*.tmp*")), 120, 0.05, "the half-written file")
        second = subprocess.Popen([sys.executable, "-c", f"from trial import data; print(len(data.load('mnist', "
                                                        f"{str(root)!r}).train_x))"],
                                  env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)                  # the second now waits on the lock the first holds
        assert second.poll() is None
        os.kill(first.pid, signal.SIGKILL)
        out, _ = second.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert second.returncode == 0 and out.strip() == "300"
    caches = list((isolated_env / "cache").glob("mnist-*.pt"))
    assert len(caches) == 1 and not tmp[0].exists()
    assert len(torch.load(caches[0], weights_only=True)["train_x"]) == 300
    assert len(data.load("mnist", root).train_x) == 300          # and this process reads it as it is


def test_a_trial_killed_mid_epoch_leaves_nothing_corrupt_and_the_next_run_resumes(isolated_env, tmp_path):
    """`python -m trial --resume` saves its state after every epoch; killed with SIGKILL in the middle of epoch 2, it
    leaves the state of epoch 1 whole (written to a temporary file, then renamed), no half-written outputs, a cache
    that loads; the same command then resumes from epoch 1 and finishes."""
    root = isolated_env / "data"
    tiny_data.write_idx_dataset(root, "MNIST", n_train=3000, n_test=100)
    out, resume_dir = tmp_path / "out", tmp_path / "resume"
    command = [sys.executable, "-m", "trial", "--dataset", "mnist", "--data-dir", str(root), "--val_size", "200",
               "--epochs", "3", "--filters", "32", "--batch_size", "32", "--lr_schedule", "constant", "--resume",
               "--resume-dir", str(resume_dir), "--output-dir", str(out), "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        state = wait_until(lambda: list(resume_dir.glob("*.pt")), 300, 0.05, "the state after epoch 1")[0]
        time.sleep(0.5)                  # well inside epoch 2 (an epoch of 2,800 images takes seconds here)
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1
    assert not list(resume_dir.glob("*.tmp*")) and not (out / "final.json").exists()
    assert len(data.load("mnist", root).train_x) == 3000
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    final = json.loads((out / "final.json").read_text())
    assert final["resumed_from_epoch"] == 1 and final["epochs_run"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
