"""experiments/studies/bf16_chance.py on tiny CIFAR-10: each measure runs and prints its figure per seed."""
from __future__ import annotations

import pytest
import torch

from experiments.studies import bf16_chance

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SET = ["--set", "val_size=40", "batch_size=32", "threads=1",
       "eval_test=false", "tta=none", "batch_norm=true"]


@pytest.mark.parametrize("measure, says", [("gradients", "largest bf16 gradient error"),
                                           ("levels", "fewest bf16 levels per std")])
def test_each_measure_prints_a_finite_figure_per_seed(tiny_root, capsys, measure, says):
    assert bf16_chance.main([measure, "baselines/simple_cnn.json", "cifar10", "--seeds", "0", "1", *SET]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["seed 0", "seed 1"]
    for line in lines:
        figure = float(line.split()[-2 if measure == "gradients" else -1])
        assert says in line and 0 <= figure < float("inf")


def test_compare_trains_both_arithmetics_side_by_side(tiny_root, capsys):
    assert bf16_chance.main(["compare", "baselines/simple_cnn.json", "cifar10", "--seeds", "0", "--epochs", "1",
                             *SET]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("seed 0 amp True:") and out[1].startswith("seed 0 amp False:")
    assert "bf16 False, fell back False" in out[1]


def test_the_gradient_error_of_identical_arithmetic_is_zero():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    error, name = bf16_chance.gradient_error(model, torch.nn.functional.cross_entropy, x, y)
    assert 0 < error < 0.1 and name   # bfloat16 rounds (error > 0), but a tiny net's gradients stay close
