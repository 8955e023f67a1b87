"""The multi-objective tuner in a real tiny NNI experiment, and the report's Pareto section on it.

A real local experiment (nnictl, NNI's manager and dispatcher, the local training service; no mocks) runs
experiments/tuners/pareto.py as the shipped nni_configs/fmnist_pareto.yml loads it (codeDirectory + className), on
tiny Fashion-MNIST, with objectives validation accuracy and parameter count (every trial reports both). The tuner
proposes, receives both objectives of every trial, and writes its study (pareto_tuner.json in the experiment's log
folder): every trial completed with two values, and a non-empty front. Then `python -m experiments.report` draws the
fronts and retrains two front points on the experiment's database. About 2 minutes on a busy 2-core CPU.

    .venv/bin/pytest tests/test_pareto_experiment.py -q
"""
from __future__ import annotations

import json

import pytest

from experiments.results import export, report
from tests import tiny_data
from tests.nni_helpers import config_from, experiment_env, nnictl_path, running_experiment, write_config

pytestmark = [pytest.mark.nni,
              pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed (pip install -r requirements.txt)")]

TRIALS = 4
WAIT = 240
# filters and dense units change the parameter count: a real trade-off against accuracy even on tiny data
SPACE = {"filters": {"_type": "choice", "_value": [8, 16, 32]}, "dense_units": {"_type": "choice", "_value": [16, 64]},
         "learning_rate": {"_type": "loguniform", "_value": [1e-3, 1e-2]}}


@pytest.fixture(scope="module")
def pareto_experiment(tmp_path_factory):
    """A real 4-trial NSGA-II experiment on tiny Fashion-MNIST, run to its end: (id, workdir, data root, record)."""
    tmp = tmp_path_factory.mktemp("pareto")
    root = tiny_data.write_all(tmp / "data")
    (tmp / "space.json").write_text(json.dumps(SPACE))
    config = config_from("fmnist_pareto.yml", tmp, maxTrialNumber=TRIALS, maxExperimentDuration="6m",
                         searchSpaceFile=str(tmp / "space.json"),
                         trialCommand="python -m trial --dataset fmnist --epochs 1 --train_subset 256 --val_size 128 "
                                      "--batch_size 64 --threads 1")
    # the shipped config's tuner, with the objectives every trial reports today and a generation of two
    config["tuner"]["classArgs"].update(objectives={"default": "maximize", "params": "minimize"}, population_size=2)
    path = write_config(tmp / "exp.yml", config)
    env = experiment_env(tmp, root)
    with running_experiment(path, env) as exp:
        trials = exp.wait_for_trials(TRIALS, timeout=WAIT)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * TRIALS, exp.logs()
        exp.check_healthy()   # a tuner that died would show in dispatcher.log
        record = json.loads((exp.root / "log" / "pareto_tuner.json").read_text())
        exp_id, workdir = exp.id, exp.workdir
    return exp_id, workdir, root, record


@pytest.mark.timeout(WAIT + 90, method="signal")
def test_the_tuner_proposes_receives_two_objectives_and_returns_a_front(pareto_experiment):
    exp_id, workdir, _, record = pareto_experiment
    assert record["algorithm"] == "nsga2" and record["objectives"] == {"default": "maximize", "params": "minimize"}
    assert len(record["trials"]) == TRIALS
    assert all(t["state"] == "COMPLETE" and len(t["values"]) == 2 for t in record["trials"]), record["trials"]
    assert record["front"] and set(record["front"]) <= {t["number"] for t in record["trials"]}
    # what the tuner was told is what the trials reported (their own final metrics, by parameter id)
    _, table = export.load_experiment(export.experiment_dir(exp_id, workdir))
    reported = {int(r["parameter_id"]): [r["final_default"], r["final_params"]] for _, r in table.iterrows()}
    assert {t["parameter_id"]: t["values"] for t in record["trials"]} == reported
    # ... and each trial trained the parameters the tuner proposed under its id
    for t in record["trials"]:
        row = table[table["parameter_id"] == t["parameter_id"]].iloc[0]
        assert (row["param_filters"], row["param_dense_units"]) == (t["parameters"]["filters"],
                                                                    t["parameters"]["dense_units"])


@pytest.mark.timeout(WAIT + 240, method="signal")
def test_the_report_draws_the_fronts_and_retrains_front_points(pareto_experiment, tmp_path, monkeypatch):
    exp_id, workdir, root, record = pareto_experiment
    monkeypatch.setenv("CNNSEARCH_DATA", str(root))
    monkeypatch.setenv("CNNSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNSEARCH_NO_DOWNLOAD", "1")
    out = tmp_path / "report"
    # no --front: a ParetoTuner search retrains 3 front points by default; --front 2 here (the test's budget)
    assert report.main([exp_id, "--root", str(workdir), "--out", str(out), "--seeds", "0", "1", "--smoke",
                        "--baseline", "baselines/simple_cnn.json", "--front", "2", "--within", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    p = summary["pareto"]
    assert p["n_candidates"] == TRIALS and p["n_refused"] == 0
    # size: the exported model's bytes where trials report them, else parameters; the latency front where trials
    # measure it (trial/train.py), and then the retrained points are that front's
    size = p["fronts"]["size"]
    assert size["column"] in ("final_model_bytes", "final_params") and size["trials"]
    kind = "latency" if "latency" in p["fronts"] else "size"
    assert p["retrained_front"] == kind and p["fronts"][kind]["trials"]
    front_ids = {t["trial_id"] for t in p["fronts"][kind]["trials"]}
    retrained = p["retrained"]
    assert 1 <= len(retrained) <= 2 and {t["trial_id"] for t in retrained} <= front_ids
    assert all(len(t["test_accuracies"]) == 2 and t["test_accuracy_ci95"][0] <= t["test_accuracy_mean"]
               <= t["test_accuracy_ci95"][1] for t in retrained)
    # the most accurate front point is the report's winner: its runs are reused, not trained again
    assert retrained[0]["group"] == f"winner1_{summary['best_trial']}"
    assert all("minus_most_accurate" in t for t in retrained[1:])
    text = (out / "report.md").read_text()
    assert "## Accuracy against latency and size: the Pareto fronts" in text
    assert "The smallest model within 5 points of the best validation accuracy" in text
    assert f"points of the {kind} front retrained" in text
    for name in p["fronts"]:
        assert (out / f"pareto_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![pareto_{name}.png](pareto_{name}.png)" in text
    if kind == "latency":
        assert "The fastest model within 5 points of the best validation accuracy" in text


@pytest.mark.timeout(600, method="signal")
def test_the_study_runs_both_searches_and_summarises_them(tmp_path):
    """`pareto_vs_tpe run --smoke`: NSGA-II then TPE, each a real local experiment of 3 trials on tiny data; every trial
    in trials.csv under its search and seed, and a summary with one reference point for both."""
    import subprocess
    import sys

    import pandas as pd

    from trial import REPO
    root = tiny_data.write_all(tmp_path / "data")
    env = experiment_env(tmp_path, root, OMP_NUM_THREADS="1")
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "experiments.studies.pareto_vs_tpe", "run", "--smoke", "--out", str(out),
                           "--workdir", str(tmp_path / "nni")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=580)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials.groupby("search").size().items()) == [("nsga2", 3), ("tpe", 3)]
    assert (trials["seed"] == 0).all() and trials["experiment_id"].nunique() == 2
    assert trials["final_latency_ms"].notna().all() and trials["final_default"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["searches"]) == {"nsga2", "tpe"} and summary["run"]["trials"] == 3
    assert summary["reference"]["final_latency_ms"] == pytest.approx(trials["final_latency_ms"].max())
    assert "nsga2 - tpe, paired over seeds 0" in done.stdout
