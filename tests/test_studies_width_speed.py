"""experiments/studies/width_speed.py at a tiny size: a row per width, parameters growing with width, the minutes
column consistent with the rate.

    .venv/bin/python -m pytest -q tests/test_studies_width_speed.py
"""
from __future__ import annotations

import json

import pytest

from experiments.studies import width_speed as ws
from trial.config import load_params_file


def test_rows_per_width(torch_one_thread):
    rows = ws.measure(load_params_file(ws.DEFAULT_PARAMS), [0.125, 0.25], batch=4, steps=1, warmup=0, rounds=2,
                      epochs=2, images=1000, log=lambda s: None)
    assert [r["width_mult"] for r in rows] == [0.125, 0.25]
    assert rows[0]["params"] < rows[1]["params"]
    for r in rows:
        assert r["images_per_s"] > 0 and len(r["rounds"]) == 2
        assert r["minutes"] == pytest.approx(2 * 1000 / r["images_per_s"] / 60)
    assert rows[0]["relative_speed"] == 1.0


def test_smoke_command_writes_json(tmp_path, torch_one_thread):
    out = tmp_path / "w.json"
    assert ws.main(["--smoke", "--threads", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["smoke"] and saved["batch"] == 8 and not saved["bf16"]
    assert [r["width_mult"] for r in saved["rows"]] == [0.125, 0.25]
