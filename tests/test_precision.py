"""bfloat16 autocast that cannot train: a first epoch at chance restarts the run in float32 (trial/precision.py).

The runs below train for real on tiny data. bfloat16 autocast is forced on (`bf16_supported` answers True) so that
the check runs on CPUs without native bfloat16 too, where autocast is emulated (slower, the same numbers). A network
that bfloat16 stops from learning while float32 learns it needs thousands of images (results/bf16-chance), so where a
test needs one, the first bfloat16 epoch is declared at chance (`bf16_epoch_at_chance`) and everything else is real.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trial import precision
from trial import train as train_mod
from trial.config import resolve

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LEARNS = {"dataset": "cifar10", "augment": False, "learning_rate": 0.05, "batch_size": 16, "filters": 8}
PLAIN = {"family": "plain", "conv_layers": 2, "filters": 4, "dense_units": 8, "batch_norm": True, "epochs": 2,
         "batch_size": 32, "eval_test": False, "threads": 1, "tta": "none", "keep": "last", "val_size": 40}


def test_chance_is_the_majority_share_plus_a_quarter_class():
    balanced = torch.bincount(torch.arange(15).repeat(10))
    assert precision.chance_accuracy(balanced) == pytest.approx(1 / 15)
    assert precision.at_chance(1 / 15, balanced)
    assert precision.at_chance(0.082, balanced)           # 0.0667 + 0.9333 / 60 = 0.0822
    assert not precision.at_chance(0.083, balanced)
    two = torch.tensor([90, 10])                          # 90% one class: answering it is chance
    assert precision.chance_accuracy(two) == pytest.approx(0.9)
    assert precision.at_chance(0.9125, two) and not precision.at_chance(0.92, two)
    with pytest.raises(ValueError, match="no images"):
        precision.chance_accuracy(torch.zeros(3, dtype=torch.long))


def one_picture_npz(path, n=240):
    """n images that are one picture (a diagonal ramp) apart from two pixels at +-1 grey level that number them, so
    no two are duplicates, and two balanced classes: every network sees one image and answers one class, at chance."""
    ramp = (np.add.outer(np.arange(16), np.arange(16)) * 7 + 10).astype(np.uint8)
    x = np.repeat(ramp[None], n, axis=0)
    for i in range(n):
        x[i, 0, i % 16] += 1
        x[i, 15, (i // 16) % 16] -= 1
        x[i, 8, i // 256] += 1 if i >= 256 else 0
    np.savez(path, x=x, y=np.arange(n) % 2)
    return path


@pytest.fixture
def forced_bf16(monkeypatch):
    monkeypatch.setattr(train_mod, "bf16_supported", lambda device: True)


@pytest.fixture
def bf16_epoch_at_chance(monkeypatch, forced_bf16):
    """The first epoch's check under bfloat16 answers "at chance"; every later check is the real one."""
    calls = []

    def first_at_chance(accuracy, counts):
        calls.append(accuracy)
        return len(calls) == 1 or precision.at_chance(accuracy, counts)
    monkeypatch.setattr(train_mod, "at_chance", first_at_chance)
    return calls


def test_a_bfloat16_run_at_chance_after_epoch_1_restarts_in_float32(tiny_root, tmp_path, bf16_epoch_at_chance,
                                                                    capfd):
    seen = []
    result = train_mod.train(resolve({**PLAIN, **LEARNS}), seen.append, output_dir=tmp_path / "run")
    err = capfd.readouterr().err
    assert "bfloat16 autocast off: after epoch 1 the validation accuracy" in err and "restarting in float32" in err
    assert "at chance too" not in err
    final = result.metrics
    assert final["bf16_autocast"] is False and "at chance" in final["amp_fallback"] and "amp_check" not in final
    assert result.config.amp is False and result.history[0]["default"] > 0.2   # float32 learnt in its epoch 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["amp"] is False       # the parameters it trained with
    assert json.loads((tmp_path / "run" / "final.json").read_text())["amp_fallback"] == final["amp_fallback"]
    # the tuner saw each epoch once, from the float32 run only
    assert [m["epoch"] for m in seen] == [1, 2]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_a_run_at_chance_in_float32_too_goes_on_in_bfloat16(isolated_env, tmp_path, forced_bf16, capfd):
    """Images that are all one picture: at chance whatever the arithmetic. The float32 restart is at chance as well,
    so bfloat16 was not the cause: the epochs after the first train in bfloat16, and the config says bfloat16."""
    data = one_picture_npz(tmp_path / "one.npz")
    seen = []
    result = train_mod.train(resolve({**PLAIN, "dataset": str(data)}), seen.append, output_dir=tmp_path / "run")
    err = capfd.readouterr().err
    assert "restarting in float32" in err and "float32's first epoch is at chance too" in err
    final = result.metrics
    assert final["bf16_autocast"] is True and "amp_fallback" not in final and "at chance too" in final["amp_check"]
    assert result.config.amp is True
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] is True
    assert [m["epoch"] for m in seen] == [1, 2]


def test_a_bfloat16_run_that_learns_keeps_bfloat16(tiny_root, tmp_path, forced_bf16, capfd):
    result = train_mod.train(resolve({**PLAIN, **LEARNS}))
    assert "bfloat16 autocast off" not in capfd.readouterr().err
    assert result.metrics["bf16_autocast"] is True and "amp_fallback" not in result.metrics
    assert "amp_check" not in result.metrics
    assert result.history[0]["default"] > 0.2   # tiny CIFAR-10's bands are learnt in one epoch


def test_the_check_scores_epoch_1_even_when_validation_runs_at_the_end_only(tiny_root, tmp_path,
                                                                             bf16_epoch_at_chance, capfd):
    seen = []
    result = train_mod.train(resolve({**PLAIN, **LEARNS, "val_every_epoch": False, "lr_schedule": "cosine"}),
                             seen.append)
    assert "restarting in float32" in capfd.readouterr().err
    assert len(bf16_epoch_at_chance) == 2   # the bfloat16 epoch 1, then the float32 one, though neither is reported
    assert result.metrics["bf16_autocast"] is False
    assert "default" not in seen[0] and "default" in seen[1]   # epoch 1 still reports no score


def test_without_autocast_nothing_is_checked_or_restarted(isolated_env, tmp_path, capfd):
    data = one_picture_npz(tmp_path / "one.npz")
    result = train_mod.train(resolve({**PLAIN, "dataset": str(data), "amp": False}))
    assert "bfloat16" not in capfd.readouterr().err and "float32" not in capfd.readouterr().err
    assert "amp_fallback" not in result.metrics and "amp_check" not in result.metrics
    assert result.metrics["epochs_run"] == 2


def test_a_promoted_trial_resumes_a_run_that_fell_back_in_float32(tiny_root, tmp_path, bf16_epoch_at_chance, capfd):
    """Hyperband promotes a trial by resuming its saved state with a larger budget: a run that fell back to float32
    is resumed in float32 (its state says why), not restarted in bfloat16 and made to fall back again."""
    state = tmp_path / "resume" / "state.pt"
    first = train_mod.train(resolve({**PLAIN, **LEARNS, "epochs": 1}), resume_from=state)
    assert "restarting in float32" in capfd.readouterr().err and first.metrics["amp_fallback"]
    seen = []
    promoted = train_mod.train(resolve({**PLAIN, **LEARNS, "epochs": 2}), seen.append, resume_from=state)
    err = capfd.readouterr().err
    assert "restarting in float32" not in err and "ignoring" not in err
    assert promoted.metrics["bf16_autocast"] is False and promoted.metrics["amp_fallback"] == first.metrics[
        "amp_fallback"]
    assert promoted.metrics["resumed_from_epoch"] == 1 and promoted.config.amp is False
    assert [(m["epoch"], m.get("resumed")) for m in seen] == [(1, 1), (2, None)]
