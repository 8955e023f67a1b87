"""The training-recipe options of the network families: what each changes and, as much, what it leaves alone.

Test-time augmentation and the weight average change how a model is scored, never the data it trains on nor the
split the tuner sees; the schedule, optimizer groups, cutout and lookahead do what their papers say.

    .venv/bin/pytest tests/test_recipe.py -q
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from trial import augment, data, optim
from trial.averaging import Lookahead
from trial.config import ConfigError, resolve
from trial.inference import TTA, evaluate, infer
from trial.model import FAMILIES, build_model
from trial.nas_space import sample_arch
from trial.optim import LOSSES
from trial.train import train

# the keys that shape a small network of each family (the nas family's network is all in its architecture)
SMALL = {family: {"conv_layers": 3, "filters": 8} for family in FAMILIES} | {
    "nas": {"nas_arch": sample_arch(random.Random(0))}, "resnet18": {}}
SCALED = sorted(set(FAMILIES) - {"resnet18"})   # torchvision's ResNet-18 is fixed: no key, width_mult neither, shapes it
TINY = {"dataset": "cifar10", "val_size": 96, "train_subset": 256, "batch_size": 64, "epochs": 2, "threads": 1,
        "eval_test": True, "family": "residual", "conv_layers": 2, "filters": 8, "blocks": 1, "augment": True,
        "keep": "last", "optimizer": "sgd", "learning_rate": 0.05, "lr_schedule": "cosine"}


@pytest.fixture
def tiny(tiny_root, torch_one_thread):
    return tiny_root


def test_tta_and_ema_change_scoring_only(tiny):
    plain = train(resolve(TINY))
    tta = train(resolve(TINY, {"tta": "mirror_translate"}))
    ema = train(resolve(TINY, {"ema_decay": 0.9}))
    losses = [[m["train_loss"] for m in r.history] for r in (plain, tta, ema)]
    assert losses[0] == losses[1] == losses[2], "the same batches, augmented alike, trained alike"
    # TTA: the very same weights, scored on the same validation images with their mirrored and shifted views
    for a, b in zip(plain.model.state_dict().values(), tta.model.state_dict().values()):
        assert torch.equal(a, b)
    d = data.prepare("cifar10", TINY["val_size"], 0, torch.device("cpu"), TINY["train_subset"])
    loss = LOSSES["cross_entropy"](tta.config)
    assert tta.history[-1]["default"] == evaluate(tta.model, d.val_x, d.val_y, loss, tta="mirror_translate")["accuracy"]
    assert tta.metrics["test_accuracy"] == evaluate(tta.model, d.test_x, d.test_y, loss,
                                                    tta="mirror_translate")["accuracy"]
    # EMA: validation and the kept model are the average, which differs from the raw weights it averages
    assert ema.history[-1]["default"] == evaluate(ema.model, d.val_x, d.val_y, loss)["accuracy"]
    assert not all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                     ema.model.state_dict().values()))


def test_the_tuner_sees_validation_only(tiny):
    reported = []
    result = train(resolve(TINY, {"tta": "mirror", "ema_decay": 0.9}), report=reported.append)
    assert all("test_accuracy" not in m for m in reported)
    assert [m["default"] for m in reported] == [m["default"] for m in result.history]
    assert result.metrics["best_val_accuracy"] == max(m["default"] for m in reported)


def test_validation_after_the_last_epoch_only_trains_the_very_same_model(tiny):
    every = train(resolve(TINY, {"tta": "mirror_translate", "ema_decay": 0.9, "epochs": 3}))
    reported = []
    last = train(resolve(TINY, {"tta": "mirror_translate", "ema_decay": 0.9, "epochs": 3, "val_every_epoch": False}),
                 report=reported.append)
    for a, b in zip(every.model.state_dict().values(), last.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [m["train_loss"] for m in last.history] == [m["train_loss"] for m in every.history]
    # every epoch is reported (progress), validation only with the last, which scores as before
    assert [m["epoch"] for m in reported] == [1, 2, 3]
    assert ["default" in m for m in reported] == [False, False, True]
    assert reported[-1]["default"] == every.history[-1]["default"]
    assert last.metrics["best_epoch"] == 3 and last.metrics["test_accuracy"] == every.metrics["test_accuracy"]


@pytest.mark.parametrize("needs", [{"keep": "best"}, {"patience": 2}, {"lr_schedule": "plateau"}])
def test_validation_once_is_refused_where_a_key_reads_it_every_epoch(needs):
    key = next(iter(needs))
    with pytest.raises(ConfigError, match=f"val_every_epoch false .*{key}"):
        resolve(TINY, needs, {"val_every_epoch": False})


@pytest.mark.parametrize("name", sorted(TTA))
def test_tta_keeps_shape_and_leaves_a_symmetric_model_unchanged(name):
    class MeanColour(nn.Module):   # blind to flips and to one-pixel shifts of a constant image
        def forward(self, x):
            return x.mean(dim=(2, 3))
    x = torch.ones(5, 3, 32, 32) * torch.arange(3.0).view(1, 3, 1, 1)
    torch.testing.assert_close(infer(MeanColour(), x, tta=name), MeanColour()(x))
    assert infer(MeanColour(), torch.randn(7, 3, 32, 32), tta=name).shape == (7, 3)


def test_mirror_tta_averages_the_two_views():
    class LeftColumn(nn.Module):
        def forward(self, x):
            return x[:, :, :, 0].mean(2)
    x = torch.randn(4, 1, 28, 28)
    expected = 0.5 * (x[:, :, :, 0].mean(2) + x[:, :, :, -1].mean(2))
    torch.testing.assert_close(infer(LeftColumn(), x, tta="mirror"), expected)


def test_translate_tta_averages_the_image_and_its_two_shifts_without_a_mirror():
    class Pixel(nn.Module):          # the pixel at row 5, column 7: which view moved it where is plain to see
        def forward(self, x):
            return x[:, :, 5, 7]
    x = torch.randn(3, 1, 28, 28)
    # shifted up-left, output pixel (5, 7) is input (4, 6); down-right it is (6, 8)
    expected = 0.5 * (x[:, :, 5, 7] + 0.5 * (x[:, :, 4, 6] + x[:, :, 6, 8]))
    torch.testing.assert_close(infer(Pixel(), x, tta="translate"), expected)
    mirrored = x.flip(-1)[:, :, 5, 7]
    assert not torch.allclose(infer(Pixel(), x, tta="translate"), 0.5 * (expected + mirrored))
    resolve({"dataset": "mnist", "tta": "translate"})    # no mirror: allowed for digits, unlike mirror_translate


def test_warmup_linear_schedule_follows_its_three_points():
    cfg = resolve({"optimizer": "sgd", "learning_rate": 2.0, "lr_schedule": "warmup_linear", "warmup_fraction": 0.25,
                   "lr_start_factor": 0.2, "lr_end_factor": 0.05})
    model = nn.Linear(2, 2)
    opt = optim.OPTIMIZERS["sgd"](optim.param_groups(model, cfg), cfg)
    schedule = optim.SCHEDULES["warmup_linear"](opt, cfg, 100)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.after_batch()
    assert lrs[0] == pytest.approx(0.4) and lrs[25] == pytest.approx(2.0) and lrs[100] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.4 + 1.6 * 12 / 25) and max(lrs) == pytest.approx(2.0)


def test_norm_biases_get_their_scale_and_decoupled_decay_is_per_step_weight_decay():
    cfg = resolve({"optimizer": "sgd", "learning_rate": 0.5, "weight_decay": 0.002, "decoupled_weight_decay": True,
                   "norm_bias_lr_scale": 64})
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    groups = optim.param_groups(model, cfg)
    by_size = {sum(p.numel() for p in g["params"]): g for g in groups}
    rest, bias = by_size[3 * 4 * 9 + 4 + 4], by_size[4]
    assert bias["params"][0] is model[1].bias and bias["lr"] == pytest.approx(32.0)
    assert rest["lr"] * rest["weight_decay"] == pytest.approx(0.002)
    assert bias["lr"] * bias["weight_decay"] == pytest.approx(0.002)
    # one SGD step (without momentum) on a zero gradient shrinks a weight by exactly lr x decay = weight_decay
    opt = optim.OPTIMIZERS["sgd"](groups, resolve(cfg.to_dict(), {"momentum": 0.0}))
    before = model[0].weight.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(model[0].weight.detach(), before * (1 - 0.002))


def test_decoupled_weight_decay_is_refused_for_adam():
    with pytest.raises(ConfigError, match="decoupled_weight_decay"):
        resolve({"optimizer": "adam", "decoupled_weight_decay": True})


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(64, 3, 32, 32)
    out = augment.cutout(x, 8, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).sum(dim=(1, 2))
    assert zeros.max() == 64 and zeros.min() >= 16, "a full square inside, at least a quarter at a corner"
    assert (out[out != 0] == 1).all()
    for image in (out == 0).all(1):
        rows, cols = image.any(1).nonzero().flatten(), image.any(0).nonzero().flatten()
        assert image[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all(), "one solid rectangle"


def test_lookahead_pulls_every_fifth_step_and_ends_on_the_average():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    average = Lookahead(model, decay=0.5, total_steps=10)
    with torch.no_grad():
        for step in range(1, 11):
            model.weight.add_(1.0)
            average.update(model)
            if step == 5:   # decay 0.5^5 x (5/10)^3 = 1/256 towards the old average 0, and the weights follow
                assert model.weight.item() == pytest.approx(5 * (1 - 1 / 256))
    average.finish(model)
    assert model.weight.item() == pytest.approx(average.average["weight"].item())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dataset", sorted(data.INFO))
def test_every_family_builds_for_every_dataset(family, dataset):
    cfg = resolve({"family": family, "dataset": dataset, **SMALL[family],
                   **({"width_mult": 0.5} if family in SCALED else {})})
    model = build_model(cfg, data.INFO[dataset].shape)
    out = model(torch.randn(2, *data.INFO[dataset].shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    torch.export.export(model.eval(), (torch.randn(2, *data.INFO[dataset].shape),))


def test_width_mult_scales_every_family():
    for family in SCALED:
        narrow, wide = (sum(p.numel() for p in build_model(resolve({"family": family, **SMALL[family],
                                                                     "width_mult": w}), (1, 28, 28)).parameters())
                        for w in (0.5, 1.0))
        assert narrow < wide, family
    with pytest.raises(ConfigError, match="width_mult.*torchvision's fixed network"):
        resolve({"family": "resnet18", "width_mult": 0.5})


def test_airbench_stem_is_whitened_from_the_training_images(tiny):
    result = train(resolve(TINY, {"family": "airbench", "conv_layers": 3, "filters": 8, "epochs": 1,
                                  "whiten_bias_epochs": 0, "optimizer": "sgd"}))
    stem = result.model.whiten
    assert not stem.weight.requires_grad and not stem.bias.requires_grad   # the bias froze after 0 epochs
    d = data.prepare("cifar10", TINY["val_size"], 0, torch.device("cpu"), TINY["train_subset"])
    patches = torch.nn.functional.unfold(d.train_x, 2).transpose(1, 2).reshape(-1, 12)
    z = (patches @ stem.weight.detach().reshape(24, 12)[:12].T).double()
    second_moment = (z.T @ z / len(z)).numpy()   # uncentred, as airbench94's whitening (it keeps the mean)
    assert np.abs(second_moment - np.eye(12)).max() < 0.1, "the stem's outputs are whitened"
