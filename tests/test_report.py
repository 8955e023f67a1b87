"""The results side on a real tiny NNI experiment: export, retrain and evaluate, the report, the exported model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.results import export, report
from experiments.results.compare import welch
from experiments.results.evaluate import classification_metrics, export_model, load_checkpoint, predict_proba
from experiments.results.retrain import finished_run, retrain, summarise
from tests import tiny_data
from tests.nni_helpers import REPO, config_from, experiment_env, nnictl_path, running_experiment, write_config
from trial import data as data_mod
from trial.config import resolve

EPOCHS = 2
SPACE = {"filters": {"_type": "choice", "_value": [8, 16]}, "dense_units": {"_type": "choice", "_value": [16, 32]},
         "learning_rate": {"_type": "loguniform", "_value": [1e-3, 1e-2]}}


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory):
    """A real 4-trial TPE experiment on tiny Fashion-MNIST, run to its end and stopped: (id, workdir, data root)."""
    if nnictl_path() is None:
        pytest.skip("nnictl is not installed (pip install -r requirements.txt)")
    tmp = tmp_path_factory.mktemp("report")
    root = tiny_data.write_all(tmp / "data")
    (tmp / "space.json").write_text(json.dumps(SPACE))
    config = config_from("fmnist.yml", tmp, maxTrialNumber=4, trialConcurrency=2, maxExperimentDuration="6m",
                         searchSpaceFile=str(tmp / "space.json"),
                         trialCommand=f"python -m trial --dataset fmnist --epochs {EPOCHS} --val_size 128 "
                                      f"--batch_size 64 --threads 1")
    config.pop("assessor")   # every trial runs to its end, so the table's counts are known
    config = write_config(tmp / "exp.yml", config)
    env = experiment_env(tmp, root)
    with running_experiment(config, env) as exp:
        exp.wait_for_trials(4, timeout=240)
        exp_id, workdir = exp.id, exp.workdir
    return exp_id, workdir, root


@pytest.fixture
def tiny_env(finished_experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNSEARCH_DATA", str(finished_experiment[2]))
    monkeypatch.setenv("CNNSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNSEARCH_NO_DOWNLOAD", "1")
    return finished_experiment


@pytest.mark.nni
def test_export_round_trips_every_trial(tiny_env, tmp_path):
    exp_id, workdir, _ = tiny_env
    out = tmp_path / "trials.csv"
    assert export.main([exp_id, "--root", str(workdir), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == 4
    assert set(table["status"]) == {"SUCCEEDED"}
    assert (table["n_intermediate"] == EPOCHS).all()
    assert table["final_default"].between(0, 1).all()
    assert (table["params_source"] == "trial").all()
    # each result carries the hash of the parameters the trial received: the row's parameters are the trained ones
    assert table["final_digest_ok"].all()
    for _, row in table.iterrows():
        own = json.loads((Path(row["trial_dir"]) / "trial.json").read_text())["sampled_params"]
        assert row["param_filters"] == own["filters"] and row["param_dense_units"] == own["dense_units"]
        assert json.loads(row["intermediate"])[-1] == pytest.approx(
            json.loads((Path(row["trial_dir"]) / "metrics.jsonl").read_text().splitlines()[-1])["default"])


def test_export_reports_a_missing_experiment_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found under .*pass --root"):
        export.experiment_dir("nosuchid", tmp_path)


@pytest.mark.nni
def test_retrain_metrics_agree_with_a_direct_computation(tiny_env, tmp_path):
    params = {"dataset": "fmnist", "filters": 8, "dense_units": 16, "val_size": 128, "batch_size": 64}
    runs = retrain(params, [0, 1], tmp_path / "runs", protocol="early_stop", epochs=2, progress=False)
    assert [r["seed"] for r in runs] == [0, 1]
    for run in runs:
        pred = np.load(Path(run["dir"]) / "test_predictions.npz")
        y, y_hat = pred["y"], pred["proba"].argmax(1)
        m = run["test"]
        assert m["accuracy"] == pytest.approx(float((y == y_hat).mean()))
        cm = np.array(m["confusion_matrix"])
        assert cm.sum() == len(y) == 200          # the tiny test split
        assert np.trace(cm) == (y == y_hat).sum()
        for k, name in enumerate(data_mod.INFO["fmnist"].classes):
            if cm[k].sum():
                assert m["per_class"][name]["recall"] == pytest.approx(cm[k, k] / cm[k].sum())
        # the checkpoint on disk is the model that was scored
        model, _ = load_checkpoint(Path(run["dir"]) / "best.pt")
        d = data_mod.prepare("fmnist", 128, 0, torch.device("cpu"))
        assert np.allclose(predict_proba(model, d.test_x), pred["proba"], atol=1e-5)
    # train_val trains on train + validation and keeps the last weights
    tv = retrain(params, [0], tmp_path / "tv", protocol="train_val", epochs=1, progress=False)
    assert tv[0]["config"]["keep"] == "last"
    assert tv[0]["config"].get("val_every_epoch", True), "the plateau schedule (the default) reads it every epoch"
    # other schedules: validation images are training images here, scored once at the end
    cosine = retrain({**params, "lr_schedule": "cosine"}, [0], tmp_path / "cos", protocol="train_val", epochs=2,
                     progress=False)[0]
    assert not cosine["config"]["val_every_epoch"]
    history = [json.loads(line) for line in (Path(cosine["dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert ["default" in m for m in history] == [False, True]


@pytest.mark.nni
def test_retrain_reuses_finished_runs_and_only_those(tiny_env, tmp_path, capfd):
    params = {"dataset": "fmnist", "filters": 8, "dense_units": 16, "val_size": 128, "batch_size": 64}
    first = retrain(params, [0, 1], tmp_path / "runs", protocol="train_val", epochs=1, progress=False)
    ckpt = [Path(r["dir"]) / "best.pt" for r in first]
    stamps = [c.stat().st_mtime_ns for c in ckpt]
    (Path(first[1]["dir"]) / "test_metrics.json").unlink()         # seed 1 was interrupted before scoring
    again = retrain(params, [0, 1], tmp_path / "runs", protocol="train_val", epochs=1, progress=False)
    assert ckpt[0].stat().st_mtime_ns == stamps[0]                  # seed 0 reused
    assert ckpt[1].stat().st_mtime_ns != stamps[1]                  # seed 1 trained again
    assert again[0]["test"] == first[0]["test"] and again[0]["final"] == first[0]["final"]
    # seeds in parallel processes (one thread each here): the finished seed is reused, a new one trains
    par = retrain(params, [0, 2], tmp_path / "runs", protocol="train_val", epochs=1, progress=False, jobs=2)
    assert [r["seed"] for r in par] == [0, 2] and par[0]["test"] == first[0]["test"]
    assert ckpt[0].stat().st_mtime_ns == stamps[0]
    assert par[1]["config"]["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert json.loads((tmp_path / "runs" / "seed2" / "test_metrics.json").read_text()) == par[1]["test"]
    err = capfd.readouterr().err           # progress from the worker processes: a line per epoch and per seed
    assert "runs seed 2: epoch 1/1, loss" in err and "seed 2: test accuracy" in err
    # a run saved before a config key existed counts as that key's default (and only the default)
    saved = Path(first[0]["dir"]) / "config.json"
    old = json.loads(saved.read_text())
    assert "nas_arch" not in old and "cutout" in old
    saved.write_text(json.dumps({k: v for k, v in old.items() if k != "cutout"}))     # saved before cutout existed
    assert finished_run(Path(first[0]["dir"]), old) is not None
    assert finished_run(Path(first[0]["dir"]), {**old, "cutout": 8}) is None
    saved.write_text(json.dumps({**old, "nas_arch": None}))      # saved when to_dict still wrote an unset nas_arch
    assert finished_run(Path(first[0]["dir"]), old) is not None
    # a run that scored validation every epoch trained the same weights as one that scores it once (keep "last")
    assert finished_run(Path(first[0]["dir"]), {**old, "val_every_epoch": False}) is not None
    saved.write_text(json.dumps(old))
    # another config in the same folder is never mistaken for a finished run
    other = retrain(params, [0], tmp_path / "runs", protocol="train_val", epochs=2, progress=False)
    assert ckpt[0].stat().st_mtime_ns != stamps[0] and other[0]["final"]["epochs_run"] == 2


def test_classification_metrics_match_hand_counts():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.1 / 3
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["recall"] == pytest.approx(1 / 2)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


@pytest.mark.nni
def test_report_writes_every_file(tiny_env, tmp_path):
    exp_id, workdir, _ = tiny_env
    out = tmp_path / "report"
    assert report.main([exp_id, "--root", str(workdir), "--out", str(out), "--seeds", "0", "1", "--smoke",
                        "--baseline", "baselines/simple_cnn.json", "--winner-set", "dense_units=24"]) == 0
    pngs = ["optimization_history.png", "learning_curves.png", "accuracy_vs_params.png", "parallel_coordinates.png",
            "importance.png", "confusion_matrix.png", "winner_vs_baseline.png", "misclassified.png"]
    for name in pngs + ["report.md", "trials.csv", "runs.csv", "summary.json", "model/model.pt2",
                        "model/model.json", "model/model_state.pt"]:
        assert (out / name).is_file(), name
    from PIL import Image
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out / name) as img:
            img.verify()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["trial_counts"] == {"SUCCEEDED": 4}
    assert set(summary["groups"]) == {f"winner1_{summary['best_trial']}", "baseline_simple_cnn"}
    assert all(len(g["test_accuracies"]) == 2 for g in summary["groups"].values())
    assert "baseline_simple_cnn" in summary["comparisons"]
    text = (out / "report.md").read_text()
    assert f"python -m experiments.report {exp_id}" in text
    assert "Scientific hyperparameters" in text and "filters" in text and "Nuisance" in text
    for name in pngs:
        assert f"({name})" in text
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and runs["test_accuracy"].between(0, 1).all()
    # --winner-set: the winners retrain with it (the search's trials had 16 or 32 dense units), the baselines without
    assert summary["winner_set"] == {"dense_units": "24"} and "dense_units = 24 set over" in text
    trained = {g: json.loads((Path(d) / "config.json").read_text())["dense_units"]
               for g, d in zip(runs["group"], runs["dir"])}
    assert trained == {f"winner1_{summary['best_trial']}": 24, "baseline_simple_cnn": 128}


@pytest.mark.slow
def test_exported_model_predicts_alone_in_a_fresh_process(tmp_path, tiny_root):
    run = retrain({"dataset": "fmnist", "filters": 8, "dense_units": 16, "val_size": 128}, [0], tmp_path / "r",
                  protocol="early_stop", epochs=1, progress=False)[0]
    model_dir = export_model(run["model"], resolve(run["config"]), tmp_path / "model")
    from PIL import Image
    raw = data_mod.load("fmnist").test_x[:5]
    paths = []
    for i, img in enumerate(raw):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(img[0].numpy()).save(paths[-1])
    script = f"""
import json, runpy, sys
predict = runpy.run_path({str(REPO / 'experiments' / 'results' / 'predict.py')!r})
model, meta = predict['load']({str(model_dir)!r})
x = predict['read_images']({[str(p) for p in paths]!r}, meta['input_shape'], meta['dataset'])
proba = model(x).tolist()
assert not any(m == 'trial' or m.startswith('trial.') or m.startswith('experiments') for m in sys.modules), \\
    sorted(m for m in sys.modules if m.startswith(('trial', 'experiments')))
print(json.dumps(proba))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    proba = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    model, cfg = load_checkpoint(Path(run["dir"]) / "best.pt")   # the checkpoint on disk holds the same weights
    expected = predict_proba(model, data_mod.normalise(raw, data_mod.INFO["fmnist"], torch.device("cpu")))
    assert np.allclose(proba, expected, atol=1e-4)
    cli = subprocess.run([sys.executable, str(REPO / "experiments" / "results" / "predict.py"), str(model_dir),
                          str(paths[0])],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.split("\t")[1] == data_mod.INFO["fmnist"].classes[int(expected[0].argmax())]


def _nni_db(exp: Path):
    """An empty NNI database at `exp`/db/nni.sqlite with NNI's schema (nni_node/core/sqlDatabase.js)."""
    import sqlite3
    (exp / "db").mkdir(parents=True)
    db = sqlite3.connect(exp / "db" / "nni.sqlite")
    db.executescript("create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                     "logPath text, sequenceId integer, message text, environmentId text);"
                     "create table MetricData (timestamp integer, trialJobId text, parameterId text, type text, "
                     "sequence integer, data text);"
                     "create table ExperimentProfile (params text, id text, execDuration integer, startTime integer, "
                     "endTime integer, logDir text, nextSequenceId integer, revision integer);")
    return db


def _fake_experiment(root: Path, end_ms) -> Path:
    """NNI's sqlite schema (nni_node/core/sqlDatabase.js) with one finished and one never-ended trial."""
    exp = root / "fake1234"
    db = _nni_db(exp)
    record = json.dumps({"parameter_id": 0, "parameters": {"filters": 8}})
    db.executemany("insert into TrialJobEvent values (?, ?, ?, ?, ?, ?, ?, ?)",
                   [(1000, "a", "RUNNING", record, None, 0, None, None), (5000, "a", "SUCCEEDED", None, None, 0, None, None),
                    (2000, "b", "RUNNING", record.replace('"parameter_id": 0', '"parameter_id": 1'), None, 1, None,
                     None)])
    db.execute("insert into MetricData values (4000, 'a', '0', 'FINAL', 0, ?)", (json.dumps(json.dumps(
        {"default": 0.5})),))
    db.execute("insert into ExperimentProfile values (?, 'fake1234', 0, 0, ?, '', 2, 1)",
               (json.dumps({"searchSpace": {}}), end_ms))
    db.commit()
    db.close()
    return exp


@pytest.mark.parametrize("end_ms, status", [(9000, "STOPPED_WITH_EXPERIMENT"), (None, "RUNNING")])
def test_export_names_trials_cut_by_a_stop(tmp_path, end_ms, status):
    _, table = export.load_experiment(_fake_experiment(tmp_path, end_ms))
    assert table.set_index("trial_id")["status"].to_dict() == {"a": "SUCCEEDED", "b": status}
    assert table.set_index("trial_id").loc["a", "final_default"] == 0.5
    assert table.set_index("trial_id").loc["a", "duration_s"] == 4.0


def test_figures_take_parameters_that_only_some_trials_have(tmp_path):
    # a nested choice gives filters_3 and its activation only to some trials: the others have NaN there (pandas then
    # keeps a string column with missing values, which sorted() cannot order)
    trials = pd.DataFrame({
        "trial_id": list("abcdef"), "sequence": range(6), "status": ["SUCCEEDED"] * 5 + ["USER_CANCELED"],
        "start_ms": [0, 10, 20, 30, 40, 50], "end_ms": [100, 110, 120, 130, 140, 150],
        "intermediate": ["[0.5, 0.6]"] * 6,
        "param_filters_3": [64, None, 128, None, 64, 128],
        "param_activation": ["relu", None, "gelu", "relu", None, "gelu"],
        "param_learning_rate": [1e-3, 2e-3, 3e-4, 1e-2, 5e-3, 1e-3],
        "final_default": [0.9, 0.8, 0.85, 0.7, 0.95, None]})
    from experiments.results import plots
    paths = [plots.accuracy_vs_params(trials, tmp_path / "a.png"),
             plots.parallel_coordinates(trials, tmp_path / "p.png"),
             plots.importance(trials, tmp_path / "i.png")[0]]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_report_flags_a_model_whose_training_diverged():
    """A run whose loss went non-finite is scored like any other (a broken network, about chance accuracy: every seed
    of the CIFAR-10 NAS winner retrained here): the summary and the report must say so, not pass it as a result."""
    def run(seed, accuracy, diverged):
        final = {"params": 1000, "train_seconds": 60.0, "diverged": diverged,
                 **({"error": "training loss became nan at learning rate 0.0125 in epoch 1; lower learning_rate or "
                              "turn on batch_norm"} if diverged else {})}
        return {"seed": seed, "final": final, "config": {"dataset": "cifar10"},
                "test": {"accuracy": accuracy, "macro_f1": 0.5, "roc_auc_ovr": 0.9}}
    groups = {"winner1_a": [run(0, 0.74, False), run(1, 0.75, False)],
              "baseline_nas": [run(0, 0.10, True), run(1, 0.10, True)]}
    summary = {name: summarise(runs) for name, runs in groups.items()}
    assert summary["baseline_nas"]["diverged_seeds"] == [0, 1] and "nan" in summary["baseline_nas"]["diverged_error"]
    assert summary["winner1_a"]["diverged_seeds"] == [] and summary["winner1_a"]["diverged_error"] is None
    r = {"experiment_id": None, "winner_files": ["a.json"], "command": "python -m experiments.report", "smoke": False,
         "dataset": "cifar10", "protocol": "train_val", "epochs": 2, "seeds": [0, 1], "groups": summary,
         "comparisons": {"baseline_nas": welch([0.74, 0.75], [0.10, 0.10])}}
    text = report.render(r, groups, {})
    assert "| baseline_nas | 0.1000 +- 0.0000 (DIVERGED: seeds 0, 1) |" in text
    assert "**baseline_nas diverged** in seeds [0, 1] (training loss became nan" in text
    assert "not a comparison of trained models: baseline_nas diverged" in text
    assert "| winner1_a | 0.7450 +- 0.0071 |" in text


def test_report_flags_a_model_that_learnt_nothing_and_seeds_that_fell_back_to_float32():
    """Chinese MNIST: airbench's recipe under bfloat16 ended 2 of 3 seeds at chance (1/15) without a NaN, and the report
    passed them as results. A run whose test accuracy is no better than answering the most frequent class is now
    named as having learnt nothing; a seed that restarted in float32 (trial/precision.py) is named too."""
    def run(seed, hits, fallback=False):   # 3 balanced classes, 10 test images each; `hits` right per class
        cm = [[hits[c] if j == c else (10 - hits[c] if j == (c + 1) % 3 else 0) for j in range(3)] for c in range(3)]
        final = {"params": 1000, "train_seconds": 60.0, **({"amp_fallback": "at chance"} if fallback else {})}
        return {"seed": seed, "final": final, "config": {"dataset": "x.npz"},
                "test": {"accuracy": sum(hits) / 30, "macro_f1": 0.5, "roc_auc_ovr": 0.9, "confusion_matrix": cm}}
    groups = {"winner1_a": [run(0, [9, 9, 9], fallback=True), run(1, [10, 9, 8])],
              "baseline_airbench": [run(0, [10, 0, 0]), run(1, [3, 4, 3]), run(2, [9, 10, 9])]}
    summary = {name: summarise(runs) for name, runs in groups.items()}
    assert summary["baseline_airbench"]["chance_seeds"] == [0, 1]       # 0.333 and 0.333: chance is 1/3 (+ 1/18)
    assert summary["winner1_a"]["chance_seeds"] == [] and summary["winner1_a"]["float32_fallback_seeds"] == [0]
    r = {"experiment_id": None, "winner_files": ["a.json"], "command": "python -m experiments.report", "smoke": False,
         "dataset": "x.npz", "protocol": "train_val", "epochs": 2, "seeds": [0, 1], "groups": summary,
         "comparisons": {"baseline_airbench": welch([0.9, 0.9], [0.33, 0.33, 0.93])}}
    text = report.render(r, groups, {})
    assert "**baseline_airbench learnt nothing** in seeds [0, 1]" in text
    assert "winner1_a: seeds [0] were at chance after their first bfloat16 epoch and trained again in float32" in text
    assert "not a comparison of trained models: baseline_airbench diverged or learnt nothing" in text


@pytest.mark.parametrize("pairs, message", [(["width_mult"], "KEY=VALUE pairs"),
                                            (["width_mult=1", "width_mult=2"], "sets a key twice")])
def test_winner_set_refuses_what_is_not_one_value_per_key(pairs, message, capsys):
    with pytest.raises(SystemExit):
        report.main(["someid", "--winner-set", *pairs])
    assert message in capsys.readouterr().err


def test_compare_sets_a_retrain_beside_a_report_and_refuses_another_protocol(tiny_root, tmp_path, capsys):
    """A baseline retrained alone (experiments.results.retrain) against a report's winner whose checkpoints are gone:
    compare reads both summary.json files, computes Welch's test over the per-seed accuracies, and refuses files
    trained under another protocol, whatever key differs."""
    from scipy import stats

    from experiments.results import compare
    from experiments.results import retrain as retrain_mod
    out = tmp_path / "resnet"
    assert retrain_mod.main(["baselines/simple_cnn.json", "--dataset", "fmnist", "--smoke", "--seeds", "0", "1",
                             "--out", str(out)]) == 0
    alone = json.loads((out / "summary.json").read_text())
    per_seed = [json.loads((out / f"seed{s}" / "test_metrics.json").read_text())["accuracy"] for s in (0, 1)]
    assert alone["groups"]["baseline_simple_cnn"]["test_accuracies"] == per_seed
    assert alone["test_accuracy_per_seed"] == {"baseline_simple_cnn": {"0": per_seed[0], "1": per_seed[1]}}
    assert {k: alone[k] for k in ("dataset", "protocol", "epochs", "seeds", "smoke", "val_size", "split_seed")} == \
        {"dataset": "fmnist", "protocol": "train_val", "epochs": 1, "seeds": [0, 1], "smoke": True, "val_size": 256,
         "split_seed": 0}
    assert alone["command"].startswith("python -m experiments.results.retrain baselines/simple_cnn.json")

    winner = [0.93, 0.95]
    group = {"test_accuracy_mean": float(np.mean(winner)), "test_accuracy_std": float(np.std(winner, ddof=1)),
             "test_accuracies": winner, "params": 1000, "train_seconds_mean": 5.0, "diverged_seeds": []}

    def write_report(name, **changed):
        fields = {"dataset": "fmnist", "protocol": "train_val", "epochs": 1, "seeds": [0, 1], "smoke": True,
                  "val_size": 256, "split_seed": 0, "groups": {"winner1_abc": group}, **changed}
        path = tmp_path / name / "summary.json"
        path.parent.mkdir()
        path.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
        return str(path)

    md = tmp_path / "cmp" / "compare.md"
    assert compare.main([write_report("report"), str(out / "summary.json"), "--out", str(md)]) == 0
    result = json.loads(md.with_suffix(".json").read_text())
    c = result["comparisons"]["baseline_simple_cnn"]
    expected = stats.ttest_ind(winner, per_seed, equal_var=False)
    assert result["reference"] == "winner1_abc" and c["diff"] == pytest.approx(np.mean(winner) - np.mean(per_seed))
    assert c["p_value"] == pytest.approx(expected.pvalue)
    assert c["ci95"] == pytest.approx(list(expected.confidence_interval(0.95)))
    text = md.read_text()
    assert "| winner1_abc | 0.9400 +- 0.0141 | 0.9300, 0.9500 |" in text and "winner1_abc minus baseline_simple_cnn" \
        in text and result["notes"] == []
    # the other way round, by name
    assert compare.main([write_report("r2"), str(out / "summary.json"), "--reference", "baseline_simple_cnn"]) == 0
    assert "baseline_simple_cnn minus winner1_abc" in capsys.readouterr().out
    # a report written before the split keys were recorded: compared, and the report says what was not checked
    assert compare.main([write_report("old", val_size=None, split_seed=None), str(out / "summary.json")]) == 0
    assert "does not record val_size: not checked" in capsys.readouterr().out
    for key, value in [("epochs", 2), ("seeds", [0, 2]), ("dataset", "mnist"), ("protocol", "early_stop"),
                       ("val_size", 5000), ("split_seed", 1), ("smoke", False)]:
        assert compare.main([write_report(f"bad_{key}", **{key: value}), str(out / "summary.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"has {key} = " in err and "bad_" in err and err.count("\n") == 1
    twice = write_report("twice", groups={"baseline_simple_cnn": group})
    assert compare.main([twice, str(out / "summary.json")]) == 2
    assert "--name" in capsys.readouterr().err
    assert compare.main([str(out / "summary.json"), "--reference", "nope"]) == 2
    assert "no group 'nope'" in capsys.readouterr().err
    (tmp_path / "not.json").write_text("{}")
    assert compare.main([str(tmp_path / "not.json")]) == 2
    assert "not a summary.json" in capsys.readouterr().err


def _failed_experiment(root: Path, trial_dirs: list[Path]) -> Path:
    """NNI's sqlite schema with trials that all FAILED (no FINAL metric): what an experiment whose every trial died
    leaves. Each trial's folder holds trial.json, as a failed trial's does."""
    from trial.config import params_digest
    exp = root / "allfail1"
    db = _nni_db(exp)
    for i, trial_dir in enumerate(trial_dirs):
        params = {"filters": 8 * (i + 1)}
        record = json.dumps({"parameter_id": i, "parameters": params})
        trial_dir.mkdir(parents=True)
        (trial_dir / "trial.json").write_text(json.dumps({"sampled_params": params,
                                                          "params_digest": params_digest(params), "parameter_id": i}))
        db.executemany("insert into TrialJobEvent values (?, ?, ?, ?, ?, ?, ?, ?)",
                       [(1000 + i, f"t{i}", "RUNNING", record, str(trial_dir), i, None, None),
                        (2000 + i, f"t{i}", "FAILED", None, str(trial_dir), i, None, None)])
    db.execute("insert into ExperimentProfile values (?, 'allfail1', 0, 0, 9000, '', 2, 1)",
               (json.dumps({"searchSpace": {}}),))
    db.commit()
    db.close()
    return exp


def test_an_experiment_whose_trials_all_failed_is_one_line_saying_nothing_finished(tmp_path, monkeypatch, capsys):
    """Before: `KeyError: 'final_default'` (no trial reported a final result, so the table has no such column)."""
    _failed_experiment(tmp_path / "nni", [tmp_path / "trials" / f"t{i}" for i in range(3)])
    _, table = export.load_experiment(tmp_path / "nni" / "allfail1")
    assert set(table["status"]) == {"FAILED"} and "final_default" not in table
    assert export.ranked_finished(table).empty
    assert export.main(["allfail1", "--root", str(tmp_path / "nni"), "--out", str(tmp_path / "t.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "t.csv")) == 3
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(report, "retrain", lambda *a, **k: pytest.fail("retrained with nothing to report"))
    assert report.main(["allfail1", "--root", str(tmp_path / "nni"), "--out", str(tmp_path / "report"),
                        "--baseline", str(REPO / "baselines" / "simple_cnn.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: experiment allfail1: nothing finished") and \
        "3 FAILED" in err and "experiments.check --experiment allfail1" in err, err


@pytest.mark.parametrize("events, said", [
    ([], "(no trials); wait for one, then run this again"),
    ([("a", "WAITING")], "(1 WAITING); wait for one, then run this again"),
    ([("a", "WAITING"), ("a", "RUNNING"), ("b", "WAITING")],
     "(1 RUNNING, 1 WAITING); wait for one, then run this again"),
], ids=["no-trials", "waiting", "running-and-waiting"])
def test_a_report_on_an_experiment_with_nothing_finished_yet_is_one_line(tmp_path, monkeypatch, capsys, events,
                                                                          said):
    """A running experiment with no trial yet, or only trials waiting or running: one line saying so, exit 2 (no
    KeyError, no retraining)."""
    exp = tmp_path / "nni" / "young1"
    db = _nni_db(exp)
    for i, (trial, state) in enumerate(events):
        record = json.dumps({"parameter_id": i, "parameters": {"filters": 8}})
        db.execute("insert into TrialJobEvent values (?, ?, ?, ?, ?, ?, ?, ?)",
                   (1000 + i, trial, state, record, None, i, None, None))
    db.execute("insert into ExperimentProfile values (?, 'young1', 0, 0, NULL, '', 2, 1)",
               (json.dumps({"searchSpace": {}}),))
    db.commit()
    db.close()
    monkeypatch.setattr(report, "retrain", lambda *a, **k: pytest.fail("retrained with nothing to report"))
    assert report.main(["young1", "--root", str(tmp_path / "nni"), "--out", str(tmp_path / "report"),
                        "--baseline", str(REPO / "baselines" / "simple_cnn.json")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: experiment young1: nothing finished, no trial has a final result {said}\n", err


def test_a_report_on_an_unknown_experiment_is_one_line_and_makes_no_folder(tmp_path, monkeypatch, capsys):
    """Before, the report's folder (reports/ID by default) was made, empty, before the id was found unknown."""
    monkeypatch.setattr(report, "retrain", lambda *a, **k: pytest.fail("retrained an unknown experiment"))
    assert report.main(["nosuchid", "--root", str(tmp_path), "--out", str(tmp_path / "report"),
                        "--baseline", str(REPO / "baselines" / "simple_cnn.json")]) == 2
    assert capsys.readouterr().err == (f"error: experiment 'nosuchid' not found under {tmp_path} (nor in "
                                       f"{export.DEFAULT_ROOT / '.experiment'}); pass --root, the "
                                       f"experimentWorkingDirectory of its config\n")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("argv, words", [
    (["--baseline", "baselines/simpel_cnn.json"], ["baseline file baselines/simpel_cnn.json", "No such file"]),
    (["--baseline", "{bad}"], ["baseline file", "unknown parameter 'learning_rat'", "did you mean 'learning_rate'"]),
    (["--baseline", "{twice}"], ["gives 'filters' twice"]),
    (["--winner-set", "widht_mult=1"], ["--winner-set", "unknown parameter 'widht_mult'"]),
    (["--baseline", "baselines/simple_cnn.json", "{resnet}"], ["baseline_resnetk", "kernel shape(s) the plain family only"]),
], ids=["missing", "mistyped-key", "key-twice", "winner-set", "refused-under-the-protocol"])
def test_report_checks_every_input_before_the_first_retraining(tmp_path, monkeypatch, capsys, argv, words):
    """A mistyped --baseline path used to surface after the winner had retrained for minutes."""
    # resnetk: each key valid alone, refused together (kernel shapes the plain family only): found by resolving
    # every group under the report's protocol before the first retraining
    (tmp_path / "bad.json").write_text(json.dumps({"learning_rat": 0.1}))
    (tmp_path / "resnetk.json").write_text(json.dumps({"family": "residual", "kernel": 5}))
    (tmp_path / "twice.json").write_text('{"filters": 8, "filters": 16}')
    argv = [a.replace("{bad}", str(tmp_path / "bad.json")).replace("{twice}", str(tmp_path / "twice.json"))
            .replace("{resnet}", str(tmp_path / "resnetk.json")) for a in argv]
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(report, "retrain", lambda *a, **k: pytest.fail("retrained before every input was checked"))
    monkeypatch.setattr(report, "protocol_data", lambda *a, **k: pytest.fail("data prepared before the checks"))
    assert report.main(["--winner", "baselines/simple_cnn.json", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err


def test_a_seed_given_twice_is_refused_and_never_counted_twice(tmp_path, capsys):
    """`--seeds 0 0 1` trained seed 0 once and counted it twice in the mean, the std and Welch's test."""
    from experiments.results import compare
    from experiments.results import retrain as retrain_mod
    for main in (report.main, retrain_mod.main):
        with pytest.raises(SystemExit) as exit_:
            main([*(["--winner"] if main is report.main else []), "baselines/simple_cnn.json", "--seeds", "0", "0",
                  "1", "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        assert "seed(s) 0 given twice in [0, 0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="given twice"):
        retrain(params={}, seeds=[1, 1], out_dir=tmp_path / "out")
    run = {"seed": 0, "final": {"params": 1, "train_seconds": 1.0}, "test": {"accuracy": 0.9, "macro_f1": 0.9,
                                                                             "roc_auc_ovr": 0.9}}
    with pytest.raises(ValueError, match="given twice"):
        summarise([run, run])
    group = {"test_accuracy_mean": 0.9, "test_accuracy_std": 0.0, "test_accuracies": [0.9, 0.9, 0.8], "params": 1,
             "train_seconds_mean": 1.0}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"dataset": "fmnist", "protocol": "train_val", "epochs": 1, "seeds": [0, 0, 1],
                                "smoke": True, "groups": {"baseline_a": group}}))
    assert compare.main([str(path)]) == 2
    assert "one of them twice" in capsys.readouterr().err
