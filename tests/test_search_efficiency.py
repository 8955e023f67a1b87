"""The search-efficiency study runs its three strategies as real NNI experiments and writes its table and plot."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from experiments.search_efficiency import best_so_far
from tests import tiny_data
from tests.nni_helpers import REPO, experiment_env, nnictl_path


def test_best_so_far_is_a_running_maximum_in_end_order():
    table = pd.DataFrame({"start_ms": [0, 0, 60000, 60000], "end_ms": [120000, 60000, 180000, None],
                          "final_default": [0.5, 0.7, 0.6, 0.9]})
    curve = best_so_far(table)
    assert curve["best"].tolist() == [0.7, 0.7, 0.7]            # the unfinished trial is left out
    assert curve["minutes"].tolist() == [1.0, 2.0, 3.0] and curve["trial"].tolist() == [1, 2, 3]


@pytest.mark.timeout(900)
def test_smoke_study_runs_every_strategy(tmp_path):
    if nnictl_path() is None:
        pytest.skip("nni is not installed (pip install -r requirements.txt)")
    root = tiny_data.write_all(tmp_path / "data")
    env = experiment_env(tmp_path, root, OMP_NUM_THREADS="1")
    out = tmp_path / "eff"
    done = subprocess.run([sys.executable, "-m", "experiments.search_efficiency", "--smoke", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"random", "tpe_medianstop", "hyperband"}
    for s in summary["strategies"].values():
        assert s["trials"][0] >= 1 and 0 <= s["mean_best"] <= 1
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["strategy"]) == {"random", "tpe_medianstop", "hyperband"}
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
