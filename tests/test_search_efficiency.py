"""The search-efficiency study runs its strategies as real NNI experiments and writes its table and plot."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from experiments.studies import search_efficiency
from experiments.studies.search_efficiency import best_so_far, summarize
from tests import tiny_data
from tests.nni_helpers import REPO, experiment_env, nnictl_path


def test_best_so_far_is_a_running_maximum_of_final_results_in_end_order():
    table = pd.DataFrame({"start_ms": [0, 0, 60000, 60000, 60000, 0],
                          "end_ms": [120000, 60000, 180000, None, 240000, 90000],
                          "status": ["SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "RUNNING", "STOPPED_WITH_EXPERIMENT",
                                     "USER_CANCELED"],
                          "final_default": [0.5, 0.7, 0.6, 0.9, 0.95, None]})
    curve = best_so_far(table)
    # the unfinished trial and the one the budget cut are left out; the early-stopped one counts, with no result
    assert curve["minutes"].tolist() == [1.0, 1.5, 2.0, 3.0] and curve["trial"].tolist() == [1, 2, 3, 4]
    assert curve["best"].tolist() == [0.7, 0.7, 0.7, 0.7]
    assert curve["final"].isna().tolist() == [False, True, False, False]


def test_best_so_far_has_no_best_before_the_first_final_result():
    table = pd.DataFrame({"start_ms": [0, 0], "end_ms": [60000, 120000], "status": ["USER_CANCELED", "SUCCEEDED"],
                          "final_default": [None, 0.8]})
    assert best_so_far(table)["best"].isna().tolist() == [True, False]


def _trials():
    # two strategies, two repeats each; "b" reaches 0.9 only in its second repeat, where one trial was stopped early
    return pd.DataFrame({"strategy": ["a", "a", "a", "b", "b", "b", "b"], "repeat": [0, 0, 1, 0, 1, 1, 1],
                         "trial_id": list("pqrstuv"), "status": ["SUCCEEDED"] * 5 + ["USER_CANCELED", "SUCCEEDED"],
                         "start_ms": [0] * 7, "end_ms": [60000, 150000, 180000, 120000, 60000, 120000, 240000],
                         "final_default": [0.85, 0.91, 0.93, 0.80, 0.88, None, 0.95]})


def test_summary_gives_best_trials_and_minutes_to_target_per_repeat():
    summary = summarize(search_efficiency.curves_of(_trials()), 0.9)
    assert summary["a"]["best_at_budget"] == [0.91, 0.93] and summary["a"]["trials"] == [2, 1]
    assert summary["a"]["minutes_to_0.9"] == [2.5, 3.0]
    assert summary["b"]["minutes_to_0.9"] == [None, 4.0]
    assert summary["b"]["trials"] == [1, 3] and summary["b"]["with_result"] == [1, 2]
    assert summary["b"]["mean_best"] == pytest.approx((0.80 + 0.95) / 2)


def test_from_summarizes_a_finished_study_again_without_running_anything(tmp_path, capsys):
    _trials().to_csv(tmp_path / "trials.csv", index=False)
    (tmp_path / "summary.json").write_text(json.dumps({"minutes": 5, "epochs": 3, "flags": "--x 1"}))
    assert search_efficiency.main(["--from", str(tmp_path), "--target", "0.92"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["minutes"] == 5 and summary["flags"] == "--x 1" and summary["repeats"] == 2
    assert summary["target"] == 0.92 and summary["strategies"]["a"]["minutes_to_0.92"] == [None, 3.0]
    assert "minutes to 0.92: never, 3.0" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "curves.csv")) == 7        # every trial ended: none was cut
    assert (tmp_path / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_from_several_studies_merges_them_into_out(tmp_path, capsys):
    trials = _trials()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        trials[trials["strategy"] == name].to_csv(tmp_path / name / "trials.csv", index=False)
        (tmp_path / name / "summary.json").write_text(json.dumps({"minutes": 5, "epochs": 3, "flags": ""}))
    out = tmp_path / "both"
    assert search_efficiency.main(["--from", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == {"a", "b"} and summary["strategies"]["b"]["minutes_to_0.9"] == [None, 4.0]
    assert len(pd.read_csv(out / "trials.csv")) == len(trials)
    # a study run with other settings does not compare, and merging one with itself would count its runs twice
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"minutes": 10, "epochs": 3, "flags": ""}))
    for dirs, says in (([tmp_path / "a", tmp_path / "b"], "only studies with the same minutes, epochs and flags"),
                       ([tmp_path / "a", tmp_path / "a"], "the same strategy and repeat more than once")):
        with pytest.raises(SystemExit):
            search_efficiency.main(["--from", *map(str, dirs), "--out", str(out)])
        assert says in capsys.readouterr().err


def test_from_a_directory_without_curves_says_what_it_needs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        search_efficiency.main(["--from", str(tmp_path)])
    assert stop.value.code == 2 and "--from takes the --out directory of a study" in capsys.readouterr().err


@pytest.mark.timeout(900)
@pytest.mark.nni
def test_smoke_study_runs_every_strategy(tmp_path):
    if nnictl_path() is None:
        pytest.skip("nni is not installed (pip install -r requirements.txt)")
    root = tiny_data.write_all(tmp_path / "data")
    env = experiment_env(tmp_path, root, OMP_NUM_THREADS="1")
    out = tmp_path / "eff"
    done = subprocess.run([sys.executable, "-m", "experiments.studies.search_efficiency", "--smoke", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=880)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["strategies"]) == set(search_efficiency.STRATEGIES)
    for s in summary["strategies"].values():
        assert s["trials"][0] >= 1 and 0 <= s["mean_best"] <= 1 and len(s["minutes_to_0.9"]) == 1
    trials = pd.read_csv(out / "trials.csv")
    assert set(trials["strategy"]) == set(search_efficiency.STRATEGIES)
    assert (out / "efficiency.png").read_bytes()[:4] == b"\x89PNG"
