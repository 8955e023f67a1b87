"""The results side on a dataset given by path: retraining, the report, the exported model and `predict` use the
folder's class names; imbalanced classes make the report lead with balanced accuracy and macro F1 (and compare by
it); the trial can tune validation balanced accuracy (`metric`). Tiny generated folders (16-40 px), one epoch.

    .venv/bin/pytest tests/test_folder_report.py -q
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.results import plots, predict, report
from experiments.results.compare import welch
from experiments.results.evaluate import classification_metrics, export_model
from experiments.results.retrain import on_dataset, summarise
from trial import adapter
from trial.config import ConfigError, resolve
from trial.model import build_model

CLASSES = ("apple", "pear", "plum")


def make_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 30)) -> Path:
    """A folder of class folders: counts[name] PNG images of `size` (width, height) each, every class its own
    brightness (so a model can tell them apart), every image unique."""
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 50, (size[1], size[0], 3)).astype(np.uint8) + np.uint8(70 * c)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_metrics_carry_balanced_accuracy_and_old_runs_get_it_from_their_confusion_matrix():
    from sklearn.metrics import balanced_accuracy_score
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    proba = np.eye(3)[[0, 0, 0, 0, 0, 0, 0, 1, 0, 2]]
    m = classification_metrics(y, proba, CLASSES)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, proba.argmax(1))) == \
        pytest.approx((1 + 0.5 + 0.5) / 3)
    assert list(m["per_class"]) == list(CLASSES)
    old = {k: v for k, v in m.items() if k != "balanced_accuracy"}   # test_metrics.json written before the key
    run = {"seed": 0, "final": {"params": 1, "train_seconds": 1.0}}
    group = summarise([{**run, "test": m}, {**run, "seed": 1, "test": old}])
    assert group["balanced_accuracies"] == pytest.approx([m["balanced_accuracy"]] * 2)
    assert group["macro_f1s"] == [m["macro_f1"]] * 2


def test_a_hand_design_moves_onto_a_folder_losing_only_a_mirror(tmp_path):
    keys = {"dataset": str(tmp_path), "image_size": 16, "mirror_safe": False}
    moved, notes = on_dataset({"dataset": "cifar10", "tta": "mirror_translate", "augment": True,
                               "augmentation": "crop_flip", "filters": 8}, keys)
    assert moved == {**keys, "tta": "none", "augment": True, "augmentation": "crop", "filters": 8}
    assert notes == ["tta mirror_translate -> none", "augmentation crop_flip -> crop"]
    safe, notes = on_dataset({"dataset": "cifar10", "tta": "mirror"}, {**keys, "mirror_safe": True})
    assert safe["tta"] == "mirror" and not notes
    bench, notes = on_dataset({"dataset": "cifar10", "tta": "mirror"}, {"dataset": "fmnist"})
    assert bench == {"dataset": "fmnist", "tta": "mirror"} and not notes


def _group(accuracies, balanced, f1=0.5):
    return {"test_accuracy_mean": float(np.mean(accuracies)), "test_accuracy_std": float(np.std(accuracies, ddof=1)),
            "test_accuracies": accuracies, "balanced_accuracy_mean": float(np.mean(balanced)),
            "balanced_accuracy_std": float(np.std(balanced, ddof=1)), "balanced_accuracies": balanced,
            "macro_f1_mean": f1, "macro_f1_std": 0.01, "roc_auc_mean": 0.9, "params": 1000, "train_seconds_mean": 3.0,
            "diverged_seeds": []}


@pytest.mark.parametrize("imbalance", [1.0, 3.0])
def test_the_report_leads_with_balanced_accuracy_when_the_classes_are_imbalanced(imbalance):
    lead = "balanced_accuracy" if imbalance > 1.5 else "accuracy"
    groups = {"winner1_a": _group([0.90, 0.92], [0.70, 0.74], 0.71), "baseline_resnet": _group([0.88, 0.89],
                                                                                              [0.60, 0.62], 0.6)}
    scores = "balanced_accuracies" if lead == "balanced_accuracy" else "test_accuracies"
    per_class = {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": n} for name, n in
                 zip(CLASSES, (30, 10, 10))}
    r = {"experiment_id": None, "winner_files": ["a.json"], "command": "python -m experiments.report", "smoke": False,
         "dataset": "/data/fruit", "protocol": "train_val", "epochs": 2, "seeds": [0, 1], "groups": groups,
         "comparisons": {"baseline_resnet": welch(groups["winner1_a"][scores], groups["baseline_resnet"][scores])},
         "classes": list(CLASSES), "class_imbalance": imbalance, "lead_metric": lead, "search_metric": "accuracy",
         "image_shape": [3, 16, 16], "dataset_keys": {"image_size": 16, "resize_mode": "crop", "mirror_safe": False},
         "baselines_changed": {"baseline_airbench": ["tta mirror_translate -> none"]},
         "per_class": {"group": "winner1_a", "seed": 1, "metrics": per_class}}
    text = report.render(r, {"winner1_a": [{"config": {"dataset": "/data/fruit"}}]}, {})
    assert "3 classes (apple, pear, plum), images 16x16 with 3 channels" in text
    assert "validation accuracy (config key `metric: accuracy`)" in text
    assert "| apple | 0.5000 | 0.5000 | 0.5000 | 30 |" in text and "| plum |" in text
    assert "baseline_airbench moved onto this dataset with tta mirror_translate -> none" in text
    if lead == "balanced_accuracy":
        assert "| model | balanced accuracy (mean +- std) | runs | macro F1 (mean +- std) | accuracy" in text
        assert "| winner1_a | 0.7200 +- 0.0283 | 0.7000, 0.7400 | 0.7100 +- 0.0100 | 0.9100 +- 0.0141 |" in text
        assert "The classes are imbalanced (largest / smallest training class 3.00 > 1.5)" in text
        assert "Winner minus baseline_resnet in balanced accuracy: +0.1100" in text
    else:
        assert "| model | test accuracy (mean +- std) |" in text and "balanced accuracy (mean" not in text
        assert "Winner minus baseline_resnet: +0.0250" in text


def test_a_report_on_an_imbalanced_folder(isolated_env, monkeypatch, torch_one_thread):
    """Retrained winner and hand designs on a folder whose classes are 3:1 imbalanced: the confusion matrix and the
    per-class table name the folder's classes, balanced accuracy leads and is what Welch's test compares, the hand
    designs train on the folder's images (airbench without its mirror) and the exported model says how to make an
    image its input."""
    root = make_folder(isolated_env / "fruit", {"apple": 18, "pear": 6, "plum": 6}, size=(20, 16))
    winner = isolated_env / "winner.json"
    winner.write_text(json.dumps({"dataset": str(root), "image_size": 16, "filters": 4, "dense_units": 8,
                                  "batch_size": 16, "metric": "balanced_accuracy"}))
    seen = {}
    real_confusion = plots.confusion

    def confusion(matrix, classes, path, title):
        seen["classes"] = list(classes)
        return real_confusion(matrix, classes, path, title)
    monkeypatch.setattr(plots, "confusion", confusion)
    out = isolated_env / "report"
    assert report.main(["--winner", str(winner), "--baseline", "baselines/resnet.json",
                        "baselines/airbench_cifar10_half.json", "--epochs", "1", "--seeds", "0", "1",
                        "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert seen["classes"] == summary["classes"] == ["apple", "pear", "plum"]
    assert summary["lead_metric"] == "balanced_accuracy" and summary["class_imbalance"] > 1.5
    assert summary["search_metric"] == "balanced_accuracy"
    assert summary["baselines_changed"] == {"baseline_airbench_cifar10_half": ["tta mirror_translate -> none"]}
    groups = summary["groups"]
    assert summary["comparisons"]["baseline_resnet"]["diff"] == pytest.approx(
        np.mean(groups["winner1_winner"]["balanced_accuracies"]) - np.mean(groups["baseline_resnet"]
                                                                           ["balanced_accuracies"]))
    for name in groups:   # every group trained on the folder's images at its size
        config = json.loads((out / "runs" / name / "seed0" / "config.json").read_text())
        assert config["dataset"] == str(root) and config["image_size"] == 16 and config["metric"] == \
            "balanced_accuracy"
    text = (out / "report.md").read_text()
    assert "| model | balanced accuracy (mean +- std) |" in text and "| apple |" in text and "| pear |" in text
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["classes"] == ["apple", "pear", "plum"] and meta["input_shape"] == [3, 16, 16]
    assert (meta["image_size"], meta["resize_mode"], meta["channels"], meta["background"]) == (16, "crop", 3, 255)


def test_predict_makes_any_image_file_a_folder_models_input(isolated_env, torch_one_thread):
    """An exported folder model classifies files of any size, mode and orientation as the training images were
    read (trial.images.read), and prints the folder's class names."""
    root = make_folder(isolated_env / "fruit", {name: 5 for name in CLASSES})
    cfg = resolve({"dataset": str(root), "image_size": 24, "resize_mode": "pad", "filters": 4, "dense_units": 8})
    torch.manual_seed(0)
    model_dir = export_model(build_model(cfg, (3, 24, 24), 3).eval(), cfg, isolated_env / "model")
    meta = json.loads((model_dir / "model.json").read_text())
    assert (meta["image_size"], meta["resize_mode"], meta["channels"]) == (24, "pad", 3)
    photo = isolated_env / "photo.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 200, 3)).astype(np.uint8)).save(photo)
    grey = isolated_env / "grey.png"
    Image.fromarray(np.full((10, 70), 90, np.uint8)).save(grey)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = predict.main([str(model_dir), str(photo), str(grey), str(root / "pear" / "0.png"),
                               str(isolated_env / "missing.png")])
    assert status == 1 and err.getvalue().count("\n") == 1 and "missing.png" in err.getvalue()
    rows = [line.split("\t") for line in out.getvalue().splitlines()]
    assert [r[0] for r in rows] == [str(photo), str(grey), str(root / "pear" / "0.png")]
    assert all(r[1] in CLASSES for r in rows)
    # the program sees what training saw: the file read as trial/folder.py read it, then the normalisation inside
    from trial import images
    x = torch.from_numpy(images.read(photo, 24, "pad", 3).copy()).float()[None]
    assert predict.read_images([photo], meta["input_shape"], meta["dataset"], meta).equal(x)


def test_the_trial_can_tune_balanced_accuracy(isolated_env, torch_one_thread):
    from trial.train import train
    root = make_folder(isolated_env / "skew", {"apple": 15, "pear": 5})
    with pytest.raises(ConfigError, match="valid values: accuracy, balanced_accuracy"):
        resolve({"metric": "f1"})
    assert "metric" not in resolve({}).to_dict()                 # old configs keep their digests
    cfg = resolve({"dataset": str(root), "image_size": 16, "epochs": 2, "filters": 4, "dense_units": 8,
                   "batch_size": 8, "metric": "balanced_accuracy"})
    result = train(cfg, output_dir=isolated_env / "run")
    history = [json.loads(line) for line in (isolated_env / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["default"] == m["val_balanced_accuracy"] for m in history)
    assert result.metrics["best_val_accuracy"] == max(m["val_balanced_accuracy"] for m in history)
    assert result.metrics["metric"] == "balanced_accuracy"
    plain = train(resolve({**cfg.to_dict(), "metric": "accuracy", "epochs": 1}))
    assert plain.history[0]["default"] == plain.history[0]["val_accuracy"] and "metric" not in plain.metrics


def test_a_run_folder_is_named_after_the_folder_not_its_path(isolated_env, monkeypatch):
    root = make_folder(isolated_env / "my photos", {name: 5 for name in CLASSES})
    monkeypatch.chdir(isolated_env)
    monkeypatch.delenv("NNI_OUTPUT_DIR", raising=False)
    outs = []

    def run(cfg, args, sampled, out, report):
        outs.append(out)
        return {}
    assert adapter.main(["--dataset", str(root), "--image_size", "16"], run=run) == 0
    assert outs[0].parent == Path("runs") and outs[0].name.startswith("my photos-")
