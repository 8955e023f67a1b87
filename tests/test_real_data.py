"""On the real datasets (../shared/data), a short run of the simple baseline learns: well above chance (10%).

A few hundred steps of batch 64 on a subset, validated on images carved from the training split. The decoded data uses
the default cache (~/.cache/cnnsearch), so CIFAR-10 is decoded once per machine, not once per test run. Skips when the
data is absent.

    .venv/bin/pytest tests/test_real_data.py -q
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trial.config import load_params_file, resolve
from trial.train import train

pytestmark = pytest.mark.slow

SIMPLE = Path(__file__).resolve().parent.parent / "baselines" / "simple_cnn.json"
# dataset: (training images, epochs, the validation accuracy it must beat)
CASES = {"mnist": (8000, 1, 0.90), "fmnist": (8000, 1, 0.70), "cifar10": (10000, 2, 0.30)}


@pytest.fixture
def one_thread():
    """One thread: on a small shared CPU, two threads fighting other processes run 10-20x slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dataset", CASES)
def test_short_run_beats_chance(shared_data, one_thread, dataset):
    subset, epochs, floor = CASES[dataset]
    cfg = resolve(load_params_file(str(SIMPLE)),
                  {"dataset": dataset, "train_subset": subset, "val_size": 2000, "epochs": epochs, "batch_size": 64,
                   "eval_test": False, "device": "cpu", "seed": 0})
    epochs_seen = []
    final = train(cfg, report=epochs_seen.append, data_dir=str(shared_data)).metrics
    assert final["epochs_run"] == epochs == len(epochs_seen) and not final["diverged"]
    assert final["best_val_accuracy"] > floor, final
    assert "test_accuracy" not in final      # the test split stays untouched while tuning
