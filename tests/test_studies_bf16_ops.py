"""experiments/studies/bf16_ops.py at a tiny size: every op of the nas space gets a row, rounding passes, and an op
that computes something else under bfloat16 autocast is flagged.

    .venv/bin/python -m pytest -q tests/test_studies_bf16_ops.py
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from experiments.studies import bf16_ops
from trial.nas_space import OPS


class WrongUnderAutocast(nn.Module):
    """A conv whose result is negated when CPU autocast is on: a stand-in for a wrong bfloat16 kernel."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x)
        return -y if torch.is_autocast_enabled("cpu") else y


def test_every_op_gets_a_row_and_rounding_is_not_flagged(torch_one_thread):
    rows = bf16_ops.run(bf16_ops.nas_ops(), sizes=[(4, 8)], batch=2, repeats=1, log=lambda s: None)
    assert [r["op"] for r in rows] == [n for n in OPS if n != "zero"]
    for r in rows:
        for key in ("output_error", "input_grad_error", "weight_grad_error", "fp32_seconds", "bf16_seconds"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["op"], key)
        assert not r["suspect"], bf16_ops.format_row(r)
    conv = next(r for r in rows if r["op"] == "conv_3x3")
    assert 0 < conv["output_error"] < 0.05    # bfloat16 rounds (not 0), within its 8-bit mantissa
    assert next(r for r in rows if r["op"] == "skip_connect")["output_error"] == 0


def test_a_wrong_op_is_flagged(torch_one_thread):
    rows = bf16_ops.run({"wrong": WrongUnderAutocast}, sizes=[(4, 8)], batch=2, repeats=0, log=lambda s: None)
    assert rows[0]["suspect"] and rows[0]["output_error"] > 1.5   # -y against y: error 2
    assert "fp32_seconds" not in rows[0]


def test_smoke_command_writes_json(tmp_path, torch_one_thread):
    out = tmp_path / "ops.json"
    assert bf16_ops.main(["--smoke", "--ops", "conv_3x3", "dil_conv_3x3", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["smoke"] and [r["op"] for r in saved["rows"]] == ["conv_3x3", "dil_conv_3x3"]
    assert (saved["rows"][0]["channels"], saved["rows"][0]["side"]) == (4, 8)


def test_unknown_op_names_the_accepted_ones():
    with pytest.raises(KeyError, match="accepted: conv_3x3"):
        bf16_ops.nas_ops(["conv_7x7"])
