"""`python -m experiments.new PATH --budget 45m` (experiments/launch/new.py): a folder of images becomes a ready NNI
experiment (a config NNI's own classes accept, a search space our validator and the pre-flight check accept, sized
for the images, the class count, this machine and the budget), a folder that would fail is refused in one line; and,
slow, that experiment run for real by NNI to a report whose model `predict` uses with the folder's class names.

    .venv/bin/pytest tests/test_new_experiment.py -q                 # the fast ones
    .venv/bin/pytest tests/test_new_experiment.py -q -m slow         # the real NNI experiment, about 2 minutes
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from experiments.launch import new
from experiments.results import report
from tests.nni_helpers import REPO, experiment_env, nnictl_path, running_experiment, write_config
from trial.config import resolve
from trial.search_space import load_space, sample, validate

CLASSES = ("circle", "square", "triangle")


def make_folder(root, per_class: int = 20, size: tuple[int, int] = (40, 30)):
    """per_class PNGs of `size` (width, height) a class, each class its own brightness, every image unique."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 50, (size[1], size[0], 3)).astype(np.uint8) + np.uint8(80 * c)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("1h30m", 5400), ("2h", 7200), ("2700s", 2700),
                                           ("90", 5400), ("1.5h", 5400)])
def test_budgets_read_as_people_write_them(text, seconds):
    assert new.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["soon", "45 parsecs", "0m", ""])
def test_a_budget_that_is_no_time_is_refused(text):
    with pytest.raises(ValueError, match="budget"):
        new.parse_budget(text)


@pytest.mark.parametrize("side", [16, 20, 28, 32, 48, 64, 96, 128])
@pytest.mark.parametrize("mirror_safe", [False, True])
def test_the_space_is_sized_for_the_image_side(tmp_path, side, mirror_safe):
    """Every branch and every draw resolves into a trial config for images of that side: depths, kernels and heads
    fit the maps; mirrors only where the classes are mirror-safe."""
    space = validate(new.search_space(side, 600, mirror_safe))
    keys = {"dataset": str(tmp_path), "image_size": side, "mirror_safe": mirror_safe}
    rng = random.Random(side)
    mirrored = set()
    for params in [new.middle(b) for b in space["family"]["_value"]] + [sample(space, rng) for _ in range(40)]:
        cfg = resolve(params, keys)
        mirrored.add(cfg.tta.startswith("mirror") or cfg.augmentation == "crop_flip")
    assert mirrored == ({False, True} if mirror_safe else {False})
    if not mirror_safe:   # each family's middle builds for that side and gives one logit a class
        import torch

        from trial.model import build_model
        for branch in space["family"]["_value"]:
            model = build_model(resolve(new.middle(branch), keys), (3, side, side), 5).eval()
            with torch.no_grad():
                assert model(torch.zeros(2, 3, side, side)).shape == (2, 5)
    assert new.batch_sizes(600) == [32, 64] and new.batch_sizes(20) == [16]


def test_a_folder_becomes_a_ready_experiment(isolated_env, capsys, monkeypatch):
    # the pre-flight check asks the `python` trials would find in the PATH: this interpreter, as when activated
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    root = make_folder(isolated_env / "shapes", per_class=12)
    out = isolated_env / "exp"
    assert new.main([str(root), "--budget", "20m", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith("ok: shapes: 3 classes, ") and " training images at 3x32x32; search " in stdout[0]
    assert stdout[1] == f"start:   python -m experiments.secure nnictl create --config {out / 'config.yml'} --port 8080"
    assert "python -m experiments.report ID --epochs" in stdout[2] and "baselines/airbench_cifar10_half.json " \
        "baselines/resnet.json" in stdout[2]
    # NNI's own config classes accept the YAML; our validator the space; the pre-flight check all of it
    from nni.experiment.config import ExperimentConfig
    config = ExperimentConfig.load(str(out / "config.yml")).canonical_copy()
    assert config.trial_concurrency == json.loads((out / "plan.json").read_text())["plan"]["concurrency"]
    space = load_space(str(out / "search_space.json"))
    assert [b["_name"] for b in space["family"]["_value"]] == ["airbench", "residual", "plain"]
    raw = yaml.safe_load((out / "config.yml").read_text())
    assert raw["tuner"]["className"] == "fixed_tpe.FixedTPE" and raw["tuner"]["classArgs"]["optimize_mode"] == \
        "maximize"
    assert f"--dataset {root} --image_size 32 " in raw["trialCommand"] and "--threads 1" in raw["trialCommand"]
    assert "mirror_safe" not in raw["trialCommand"] and "metric" not in raw["trialCommand"]
    plan = json.loads((out / "plan.json").read_text())
    p = plan["plan"]
    assert p["search_s"] + p["retrain_s"] == pytest.approx(20 * 60)
    assert 1 <= p["trial_epochs"] <= p["retrain_epochs"] <= new.MAX_EPOCHS and p["max_trials"] >= p["concurrency"]
    assert set(plan["machine"]["rates"]) == {"airbench", "residual", "plain", "baseline_airbench_cifar10_half",
                                             "baseline_resnet", "baseline_resnet18_torchvision"}
    assert plan["classes"] == list(CLASSES) and plan["metric"] == "accuracy"
    from experiments.launch.check import check
    found = check(out / "config.yml", draws=20)
    assert found.ok, found.problems
    # the pre-flight audits the trials' dataset, a relative path read from trialCodeDirectory as trials read it
    raw["trialCommand"] = raw["trialCommand"].replace(f"--dataset {root}", f"--dataset {os.path.relpath(root, REPO)}")
    write_config(out / "relative.yml", raw)
    assert check(out / "relative.yml", draws=5).ok
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    problems = check(out / "relative.yml", draws=5).problems
    assert len(problems) == 1 and "the trials' dataset is refused by its audit" in problems[0] and \
        "square/broken.png" in problems[0], problems
    # written over only when asked
    assert new.main([str(root), "--budget", "20m", "--out", str(out)]) == 1
    assert "exists: give another --out, or --force" in capsys.readouterr().err


def test_imbalance_and_mirrors_reach_the_trials(isolated_env):
    root = make_folder(isolated_env / "skew", per_class=6)
    for i in range(6, 20):
        Image.fromarray(np.full((30, 40, 3), 7 + i, np.uint8)).save(root / "circle" / f"{i}.png")
    result = new.make(str(root), "30m", str(isolated_env / "exp"), mirror_safe=True, image_size=24, log=lambda _: None)
    assert result["metric"] == "balanced_accuracy" and result["class_imbalance"] > 1.5
    command = result["trial_command"]
    assert "--image_size 24" in command and "--mirror_safe True" in command and "--metric balanced_accuracy" in \
        command
    space = json.loads((isolated_env / "exp" / "search_space.json").read_text())
    airbench = space["family"]["_value"][0]
    assert airbench["tta"]["_value"] == ["mirror_translate"] and "crop_flip" in airbench["augmentation"]["_value"]


@pytest.mark.parametrize("what, words", [
    ("corrupt", ["1 file does not decode as an image: square/broken.png", "skip_bad_images"]),
    ("budget", ["too small", "--budget"]),
])
def test_what_cannot_make_an_experiment_is_refused_in_one_line(isolated_env, capsys, what, words):
    root = make_folder(isolated_env / "shapes", per_class=6)
    budget = "20m"
    if what == "corrupt":
        (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    else:
        budget = "1m"
    assert new.main([str(root), "--budget", budget, "--out", str(isolated_env / "exp")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and all(w in err[-1] for w in words), err
    assert not (isolated_env / "exp").exists()


@pytest.mark.slow
@pytest.mark.nni
def test_a_folder_experiment_runs_to_a_report_and_predict_names_the_classes(tmp_path, monkeypatch):
    """End to end on a generated folder (3 classes x 20 images, 40x30 px): experiments.new writes the experiment, NNI
    runs 2 trials of 1 epoch, the report retrains the winner and the hand designs on the folder, and the exported
    model, run by predict.py as a lone script, names the folder's classes for a photo of another size."""
    if nnictl_path() is None:
        pytest.skip("nnictl is not installed (pip install -r requirements.txt)")
    root = make_folder(tmp_path / "shapes", per_class=20)
    env = experiment_env(tmp_path, tmp_path / "data")
    monkeypatch.setenv("CNNSEARCH_CACHE", env["CNNSEARCH_CACHE"])   # decoded once, here, for the trials
    monkeypatch.setenv("CNNSEARCH_NO_DOWNLOAD", "1")
    out = tmp_path / "exp"
    result = new.make(str(root), "15m", str(out), trial_epochs=1, max_trials=2, log=lambda _: None)
    config = yaml.safe_load((out / "config.yml").read_text())
    assert config["maxTrialNumber"] == 2 and "--epochs 1 " in config["trialCommand"]
    config.update(experimentWorkingDirectory=str(tmp_path / "nni-experiments"), trialConcurrency=2,
                  maxExperimentDuration="6m")
    config.pop("assessor", None)
    write_config(out / "config.yml", config)
    with running_experiment(out / "config.yml", env) as exp:
        trials = exp.wait_for_trials(2, timeout=300)
        exp_id, workdir = exp.id, exp.workdir
    assert [t["status"] for t in trials] == ["SUCCEEDED", "SUCCEEDED"], exp.logs()
    report_dir = tmp_path / "report"
    monkeypatch.chdir(REPO)   # the baselines' paths, as the printed report command gives them
    assert report.main([exp_id, "--root", str(workdir), "--out", str(report_dir), "--epochs", "1", "--seeds", "0",
                        "1", "--baseline", *result["baselines"]]) == 0
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["classes"] == list(CLASSES) and summary["n_trials"] == 2
    assert set(summary["groups"]) == {f"winner1_{summary['best_trial']}", "baseline_airbench_cifar10_half",
                                      "baseline_resnet", "baseline_resnet18_torchvision"}
    assert "| circle |" in (report_dir / "report.md").read_text()
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((300, 200, 3), 170, np.uint8)).save(photo)
    script = REPO / "experiments" / "results" / "predict.py"
    shown = subprocess.run([sys.executable, str(script), str(report_dir / "model"), str(photo),
                            str(root / "square" / "0.png")], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    rows = [line.split("\t") for line in shown.stdout.splitlines()]
    assert [r[0] for r in rows] == [str(photo), str(root / "square" / "0.png")] and all(r[1] in CLASSES for r in rows)
