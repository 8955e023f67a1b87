"""experiments/studies/tta.py on a checkpoint of a tiny airbench net: every mode scored from the same weights, `none`
equal to plain inference, the mirror equal to averaging the flipped images' logits by hand.

    .venv/bin/python -m pytest -q tests/test_studies_tta.py
"""
from __future__ import annotations

import json

import pytest
import torch

from experiments.studies import tta
from trial import data as data_mod
from trial.config import resolve
from trial.model import build_model


@pytest.fixture
def checkpoint(tiny_root, tmp_path):
    torch.manual_seed(0)
    cfg = resolve({"dataset": "fmnist", "family": "airbench", "width_mult": 0.125, "val_size": 64})
    model = build_model(cfg, data_mod.INFO["fmnist"].shape)
    run = tmp_path / "run" / "seed0"
    run.mkdir(parents=True)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict()}, run / "best.pt")
    return run, model.eval()


def test_every_mode_from_the_same_weights(checkpoint, torch_one_thread):
    run, model = checkpoint
    r = tta.score(run, limit=50)
    assert r["test_images"] == 50 and list(r["accuracy"]) == ["none", "mirror", "mirror_translate", "translate"]
    d = data_mod.prepare("fmnist", 64, 0, torch.device("cpu"))
    x, y = d.test_x[:50], d.test_y[:50]
    with torch.no_grad():
        plain = float((model(x).argmax(1) == y).float().mean())
        mirrored = float(((model(x) + model(x.flip(-1))).argmax(1) == y).float().mean())
    assert r["accuracy"]["none"] == pytest.approx(plain)
    assert r["accuracy"]["mirror"] == pytest.approx(mirrored)


def test_smoke_command_writes_json(checkpoint, tmp_path, torch_one_thread):
    run, _ = checkpoint
    out = tmp_path / "tta.json"
    assert tta.main([str(run / "best.pt"), "--smoke", "--modes", "none", "mirror", "--threads", "1",
                     "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved[0]["test_images"] == 200 and set(saved[0]["accuracy"]) == {"none", "mirror"}   # tiny split: 200


def test_unknown_mode_names_the_accepted_ones(checkpoint):
    with pytest.raises(KeyError, match="accepted: none, mirror"):
        tta.score(checkpoint[0], modes=["rotate"])
