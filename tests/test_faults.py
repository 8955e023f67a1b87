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

import pytest
import torch

from tests import tiny_data
from tests.conftest import REPO
from tests.nni_helpers import wait_until
from tests.test_trial_cli import call_trial
from trial import data

# the second decoder: data.load as it is, with the lock it takes saying on stderr when it finds the lock held and waits
WAITS = textwrap.dedent("""
    import sys
    import filelock
    from trial import data
    class SaysWhenItWaits(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            try:
                return super().acquire(blocking=False)
            except filelock.Timeout:
                print("waiting on the lock", file=sys.stderr, flush=True)
            return super().acquire(*args, **kwargs)
    filelock.FileLock = SaysWhenItWaits
    print(len(data.load("mnist", {root!r}).train_x))
""")

# a trial that stops a few steps into epoch 2 (its state after epoch 1 saved), says so in a file and waits to be killed
STALLS_IN_EPOCH_2 = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import trial.train
    from trial.adapter import main
    marker, argv = Path(sys.argv[1]), sys.argv[2:]
    # epoch 2 is the first epoch begun once epoch 1's state is saved (counting calls would count a first epoch that
    # restarts in float32, trial/precision.py, twice)
    state_dir, real_batches = Path(argv[argv.index("--resume-dir") + 1]), trial.train.batches
    def batches(*args, **kwargs):
        saved = any(state_dir.glob("*.pt"))
        for step, batch in enumerate(real_batches(*args, **kwargs), 1):
            if saved and step == 4:
                marker.write_text("epoch 2, 3 steps trained")
                time.sleep(600)
            yield batch
    trial.train.batches = batches
    sys.exit(main(argv))
""")


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
        with open(tmp_path / "second.err", "w") as err:
            second = subprocess.Popen([sys.executable, "-c", WAITS.format(root=str(root))], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=err, text=True)
        wait_until(lambda: "waiting on the lock" in (tmp_path / "second.err").read_text(), 120, 0.05,
                   "the second decoder to wait on the lock the first holds")
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
    """`python -m trial --resume` saves its state after every epoch; killed with SIGKILL in the middle of epoch 2 (a
    few optimiser steps into it: the process stalls there and says so, so the kill never comes too late), it leaves
    the state of epoch 1 whole (written to a temporary file, then renamed), no half-written outputs, a cache that
    loads; the same command then resumes from epoch 1 and finishes."""
    root = isolated_env / "data"
    tiny_data.write_idx_dataset(root, "MNIST", n_train=600, n_test=100)
    out, resume_dir, marker = tmp_path / "out", tmp_path / "resume", tmp_path / "in_epoch_2"
    args = ["--dataset", "mnist", "--data-dir", str(root), "--val_size", "200", "--epochs", "3", "--filters", "8",
            "--dense_units", "16", "--batch_size", "32", "--lr_schedule", "constant", "--resume", "--resume-dir",
            str(resume_dir), "--output-dir", str(out), "--threads", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    proc = subprocess.Popen([sys.executable, "-c", STALLS_IN_EPOCH_2, str(marker), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, 300, 0.05, "the trial to reach epoch 2")
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    state = list(resume_dir.glob("*.pt"))
    assert len(state) == 1
    saved = torch.load(state[0], weights_only=True)
    assert saved["epoch"] == 1
    assert not list(resume_dir.glob("*.tmp*")) and not (out / "final.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert len(data.load("mnist", root).train_x) == 600
    again = call_trial(*args)            # the next run (in this process: what matters is what it finds on disk)
    assert again.returncode == 0, again.stderr
    final = json.loads((out / "final.json").read_text())
    assert final["resumed_from_epoch"] == 1 and final["epochs_run"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


HOLDS = textwrap.dedent("""
    import sys, time
    from trial import data
    with data.cache_lock(sys.argv[1]):
        print("holding", flush=True)
        time.sleep(600)
""")


def test_a_lock_held_by_a_stopped_process_ends_in_one_clear_error(tmp_path):
    """A trial stopped (SIGSTOP) while it holds the dataset cache lock: the next one says it waits, then ends with
    an error naming the holder and the fix, instead of waiting forever; once the holder goes on, the lock is free."""
    from trial.data import DatasetError, cache_lock
    lock = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDS, lock], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"    # the event: it holds the lock
        os.kill(holder.pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(DatasetError, match=rf"process {holder.pid}, which is stopped.*kill -CONT {holder.pid}"):
            with cache_lock(lock, timeout_s=60, poll_s=0.2):
                pass
        assert time.monotonic() - start < 30
        with pytest.raises(DatasetError, match="waited"):            # a running holder: the bound is the timeout
            os.kill(holder.pid, signal.SIGCONT)
            with cache_lock(lock, timeout_s=0.5, poll_s=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with cache_lock(lock, timeout_s=5, poll_s=0.2):               # a holder that died released it with its process
        pass
