"""Load, bounded in count and time: a real local NNI experiment of 40 trials at concurrency 8, each the adapter's
whole path without training (`python -m experiments.studies.load_trial`); every trial accounted for, every final
result recorded once and its own, the manager's memory steady. `python -m experiments.studies.load --trials 300` is the full run.

    .venv/bin/pytest tests/test_load.py -q
"""
from __future__ import annotations

import pytest

from experiments.studies.load import run_load
from tests.nni_helpers import nnictl_path

pytestmark = [pytest.mark.nni, pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")]


@pytest.mark.timeout(900, method="signal")
def test_forty_short_trials_at_concurrency_eight_lose_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    figures = run_load(40, 8, tmp_path / "nni-experiments")
    assert figures["trials_started"] == 40 and figures["statuses"] == {"SUCCEEDED": 40}, figures
    assert figures["final_results_recorded"] == 40 and figures["trials_with_more_than_one_final"] == 0
    assert figures["results_lost"] == 0
    assert figures["rss_samples"] > 10
    assert figures["manager_rss_mb_end"] < 2 * figures["manager_rss_mb_start"] + 50, figures
    quarters = figures["manager_rss_mb_at_25_50_75_100pct_ended"]
    assert len(quarters) == 4 and all(q is not None and q > 0 for q in quarters), figures
