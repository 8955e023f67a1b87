"""The benchmark runs in --quick mode and writes a well-formed result (timings are read from its output, never
asserted here: this machine is noisy)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny_data
from tests.nni_helpers import REPO, experiment_env, nnictl_path

KEYS = ("harness_vs_bare", "harness_vs_dataloader", "trial_start_warm_s", "trial_start_cold_s",
        "nni_overhead_s_per_trial", "hyperband_epochs_saved_frac")


@pytest.mark.timeout(600)
@pytest.mark.nni
def test_quick_benchmark_writes_every_key(tmp_path):
    if nnictl_path() is None:
        pytest.skip("nni is not installed (pip install -r requirements.txt)")
    root = tiny_data.write_all(tmp_path / "data")
    env = experiment_env(tmp_path, root, OMP_NUM_THREADS="1")
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--quick", "--images", "256",
                           "--nni-trials", "4", "--json", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=560)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]), key
    assert isinstance(result["device"], str) and result["device"]
    for ds in ("fmnist", "cifar10"):
        rates = result["throughput"][ds]["images_per_s"]
        assert set(rates) == {"harness", "bare", "dataloader"} and all(v > 0 for v in rates.values())
        runs = result["throughput"][ds]["runs"]
        assert result["throughput"][ds]["harness_vs_bare"] == pytest.approx(
            float(np.median(np.array(runs["harness"]) / np.array(runs["bare"]))))
    assert result["harness_vs_bare"] == min(result["throughput"][d]["harness_vs_bare"] for d in ("fmnist", "cifar10"))
    for ds in ("fmnist", "cifar10"):
        families = result["families"][ds]
        assert set(families) == {"plain", "residual", "airbench"}
        for f in families.values():
            assert all(v > 0 for v in f["images_per_s"].values()) and 0 <= f["val_accuracy"] <= 1
            assert f["val_accuracy_per_cpu_minute"] == pytest.approx(f["val_accuracy"] / f["cpu_minutes"])
    assert "acc/CPU-min" in done.stdout
    assert result["trial_start_cold_s"] > 0 and result["trial_start_warm_s"] > 0
    assert result["nni"]["trials"] == 4 and len(result["nni"]["gaps_s"]) == 2
    assert "harness img/s" in done.stdout and "trial start to first step" in done.stdout
    # a real Hyperband iteration (R=3, eta=3): 6 trials, and every promotion resumed its previous round
    h = result["hyperband"]
    assert h["trials"] == 6 and h["epochs_budgeted"] == 12
    assert h["epochs_reused"] == 1 and h["saved_frac"] == pytest.approx(h["expected_frac"])
    assert result["hyperband_epochs_saved_frac"] == pytest.approx(9 / 78)   # the shipped R=9, eta=3 iteration


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_compiled_harness_is_timed_beside_the_others(tmp_path, monkeypatch):
    from experiments.studies import benchmark
    root = tiny_data.write_all(tmp_path / "data")
    monkeypatch.setenv("CNNSEARCH_DATA", str(root))
    monkeypatch.setenv("CNNSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNSEARCH_NO_DOWNLOAD", "1")
    monkeypatch.setattr(benchmark, "_COMPILED", {})
    import torch
    t = benchmark.throughput("fmnist", 256, 1, torch.device("cpu"), 0, compiled=True)
    assert set(t["images_per_s"]) == {"harness", "bare", "dataloader", "compiled"}
    assert t["compiled_vs_harness"] == pytest.approx(t["runs"]["compiled"][0] / t["runs"]["harness"][0])
    assert t["compile_s"] > 0
    # the compiled module really is what ran: dynamo wrapped the model that trained
    _, _, cmodel, *_ = benchmark._COMPILED["fmnist"]
    assert isinstance(cmodel, torch._dynamo.eval_frame.OptimizedModule)


def test_paired_ratio_is_the_median_of_the_per_round_ratios():
    from experiments.studies.benchmark import paired_ratio
    # Fashion-MNIST harness and bare-loop images/s of three rounds of a real --quick run on the 2-core CPU: the
    # ratio of the two medians (5406 / 6299 = 0.86) pairs the harness's slowest round with the bare loop's fastest
    harness, bare = [5406.3, 6175.6, 5300.7], [6299.3, 6319.6, 5245.7]
    assert float(np.median(harness)) / float(np.median(bare)) == pytest.approx(0.858, abs=1e-3)
    assert paired_ratio(harness, bare) == pytest.approx(6175.6 / 6319.6)       # rounds: 0.858, 0.977, 1.010
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0], [1.0, 2.0])
