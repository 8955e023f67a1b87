"""The airbench94 CPU reference (experiments/studies/airbench_reference.py) runs end to end on tiny random data.

A couple of hundred random CIFAR-shaped uint8 images, width 0.25, half an epoch with a small batch so that several
optimiser steps, a lookahead (EMA) update and the final EMA copy all happen. Takes a second or two on one core.

    .venv/bin/python -m pytest -q tests/test_airbench_reference.py -p no:cacheprovider
"""
from __future__ import annotations

import math

import pytest
import torch

from experiments.studies import airbench_reference as ar


def tiny_split(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), dtype=torch.int64, generator=g)
    return x, y


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bf16", [False, True])
def test_train_reference_runs_on_tiny_data(bf16, torch_one_thread):
    train_x, train_y = tiny_split(192, 0)
    test_x, test_y = tiny_split(64, 1)
    lines = []
    r = ar.train_reference(train_x, train_y, test_x, test_y, epochs=0.5, width_mult=0.25, seed=0,
                           batch_size=16, bf16=bf16, log=lines.append)
    assert r["bf16"] is bf16 and (r["n_train"], r["n_test"], r["batch_size"]) == (192, 64, 16)
    # 192 // 16 = 12 steps per epoch, half an epoch -> 6 steps: one lookahead update at step 5, one final copy.
    assert r["total_train_steps"] == 6
    assert r["lookahead_updates"] == 2
    assert r["widths"] == {"block1": 16, "block2": 64, "block3": 64}
    assert len(r["per_epoch"]) == 1 and len(lines) == 1
    e = r["per_epoch"][0]
    assert e["steps"] == 6
    # the triangular schedule: warm-up is int(6 * 0.23) = 1 step, so step 5 (the last) is in the warm-down
    assert e["lr_factor"] == pytest.approx(1.0 * (1 - 4 / 5) + 0.07 * 4 / 5)
    for key in ("test_accuracy", "test_accuracy_tta"):
        assert math.isfinite(r[key]) and 0.0 <= r[key] <= 1.0
    assert math.isfinite(e["train_loss"]) and 0.0 <= e["train_acc"] <= 1.0
    assert r["train_seconds"] > 0 and r["tta_seconds"] > 0


def test_lr_schedule_and_lookahead_match_airbench():
    # LookaheadState: every float tensor is pulled towards the EMA and copied back; integer buffers are left alone.
    net = ar.make_net(0.25)
    state = ar.LookaheadState(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.num_batches_tracked += 3
    state.update(net, decay=0.75)
    after = net.state_dict()
    assert torch.allclose(after["7.weight"], before["7.weight"] + 0.25)   # the linear head
    assert int(after["2.norm1.num_batches_tracked"]) == 3
    # whitening init: +/- pairs of scaled eigenvectors
    x = ar.normalize(torch.rand(64, 3, 32, 32))
    ar.init_whitening_conv(net[0], x)
    w0 = net[0].weight
    assert w0.shape == (24, 3, 2, 2) and torch.allclose(w0[:12], -w0[12:])


def test_rejects_fewer_images_than_a_batch():
    x, y = tiny_split(16, 0)
    with pytest.raises(ValueError):
        ar.train_reference(x, y, x, y, epochs=0.5, width_mult=0.25, batch_size=32, log=None)
