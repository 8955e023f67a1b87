"""experiments/studies/find_nonfinite.py: it names the module that first goes non-finite, forward or backward, and
trains a real config from a params file through the harness's pieces on tiny data.

    .venv/bin/python -m pytest -q tests/test_studies_find_nonfinite.py
"""
from __future__ import annotations

import json

import torch
from torch import nn

from experiments.studies import find_nonfinite as fn
from trial import REPO


class BlowUp(nn.Module):
    """Identity until its `at`-th call (0-based), then infinity."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        return x * float("inf") if self.calls - 1 == self.at else x


class NanGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class BadBackward(nn.Module):
    def forward(self, x):
        return NanGradient.apply(x)


def tiny_batches(n: int = 10):
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        yield torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)


def run(model, steps=10):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return fn.find_nonfinite(model, tiny_batches(), nn.functional.cross_entropy, opt, steps, amp=False, every=0,
                             log=lambda s: None)


def test_names_the_module_whose_output_turns_infinite():
    torch.manual_seed(0)
    r = run(nn.Sequential(nn.Linear(4, 4), BlowUp(at=2), nn.Linear(4, 2)))
    assert r["step"] == 2 and r["steps"] == 2
    assert r["first"].startswith("forward: 1 (BlowUp) output")
    assert len(r["losses"]) == 3


def test_names_the_output_whose_gradient_turns_nan():
    torch.manual_seed(0)
    r = run(nn.Sequential(nn.Linear(4, 4), BadBackward(), nn.Linear(4, 2)))
    assert r["step"] == 0
    assert r["first"].startswith("backward: gradient of 0 (Linear) output")
    assert r["bad_params"] == ["0.weight", "0.bias"]


def test_a_finite_run_takes_every_step_and_unhooks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    r = run(model, steps=5)
    assert r == {**r, "steps": 5, "first": None, "step": None, "bad_params": []} and len(r["losses"]) == 5
    assert all(not m._forward_hooks for m in model.modules())


def test_smoke_command_on_a_baseline(tiny_root, tmp_path, torch_one_thread):
    out = tmp_path / "result.json"
    assert fn.main(["--params", str(REPO / "baselines" / "simple_cnn.json"), "--dataset", "fmnist", "--smoke",
                    "--threads", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["steps"] == 3 and saved["first"] is None and len(saved["losses"]) == 3
    assert saved["config"]["dataset"] == "fmnist" and saved["config"]["train_subset"] == 256


def test_smoke_command_on_an_architecture_file(tiny_root, torch_one_thread, capsys):
    arch = REPO / "results" / "cifar10-nas-comparison" / "evolution-cifar10.json"
    assert fn.main(["--arch", str(arch), "--dataset", "cifar10", "--smoke", "--threads", "1"]) == 0
    assert "3 steps, all finite (bf16 autocast)" in capsys.readouterr().out
