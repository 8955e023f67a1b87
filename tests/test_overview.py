"""experiments/results/overview.py on made-up report folders: the rows it extracts (winner, strongest hand design
among the report's baselines and those retrained apart, Welch's difference) and the PNG it writes.

    .venv/bin/python -m pytest -q tests/test_overview.py
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.results import overview

PROTOCOL = {"dataset": "fmnist", "protocol": "train_val", "seeds": [0, 1, 2], "epochs": 12, "smoke": False,
            "val_size": 5000, "split_seed": 0}


def group(accs):
    return {"test_accuracy_mean": float(np.mean(accs)), "test_accuracy_std": float(np.std(accs, ddof=1)),
            "test_accuracies": accs}


def write(path, groups, **protocol):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**PROTOCOL, **protocol, "groups": {k: group(v) for k, v in groups.items()}}))


@pytest.fixture
def report(tmp_path):
    folder = tmp_path / "fmnist-abc"
    write(folder / "summary.json", {"winner1_Xy": [0.94, 0.95, 0.945],
                                    "baseline_simple_cnn": [0.91, 0.92, 0.915],
                                    # a NAS architecture retrained as a baseline: no baselines/ file, not a hand design
                                    "baseline_evolution-fmnist": [0.96, 0.97, 0.965]})
    write(folder / "baseline_resnet" / "summary.json", {"baseline_resnet": [0.93, 0.932, 0.931]})
    return folder


def test_row_takes_the_strongest_hand_design(report):
    r = overview.report_row(report)
    assert (r["dataset"], r["dataset_name"], r["report"], r["epochs"]) == ("fmnist", "Fashion-MNIST", "fmnist-abc", 12)
    assert r["winner"] == "Xy" and r["winner_accuracies"] == [0.94, 0.95, 0.945]
    assert r["hand"] == "resnet" and r["hand_file"].endswith("baseline_resnet/summary.json")
    assert r["other_hand_designs"] == {"simple_cnn": pytest.approx(0.915)}
    assert r["diff"] == pytest.approx(0.945 - 0.931)
    assert r["ci95"][0] < r["diff"] < r["ci95"][1] and 0 < r["p_value"] < 0.05
    assert r["bar"] == 0.95 and r["notes"] == []


def test_command_writes_png_and_rows(report, tmp_path, capsys):
    png, rows = tmp_path / "img" / "chart.png", tmp_path / "rows.json"
    assert overview.main([str(report), str(report), "--out", str(png), "--json", str(rows)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(rows.read_text())
    assert len(saved) == 2 and saved[0]["hand"] == "resnet"
    assert "| Fashion-MNIST (fmnist-abc) | Xy: 0.9450 +- 0.0050 | resnet: 0.9310 +- 0.0010 |" in capsys.readouterr().out


def test_a_baseline_under_another_protocol_is_refused(report, tmp_path, capsys):
    write(report / "baseline_resnet" / "summary.json", {"baseline_resnet": [0.93, 0.932, 0.931]}, epochs=16)
    assert overview.main([str(report), "--out", str(tmp_path / "x.png")]) == 2
    assert "epochs" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_a_report_without_a_hand_design_is_refused(tmp_path):
    write(tmp_path / "r" / "summary.json", {"winner1_A": [0.9, 0.91], "baseline_evolution-x": [0.8, 0.81]})
    with pytest.raises(ValueError, match="baseline_"):
        overview.report_row(tmp_path / "r")
