"""Every configuration a search space can draw builds and trains; every name a table holds is accepted; augmentation
keeps images sane.

300 seeded draws per search space (20 in the fast tier), each resolved for its dataset (taken from the file name),
built for that dataset's input shape and trained for one optimizer step on a random batch of 4. Identical models are
stepped once.

    .venv/bin/pytest tests/test_model_and_search_spaces.py -q
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from trial import REPO, augment, config, model, optim, search_space
from trial.data import INFO, background_fill, normalise
from trial.nas_space import sample_arch

SPACES = sorted((REPO / "search_spaces").glob("*.json"))
BASELINES = sorted((REPO / "baselines").glob("*.json"))
DRAWS = 300          # per search space in the slow tier
FAST_DRAWS = 20      # in the fast tier
BATCH = 4
# fields that do not change the model, its first step or its loss; configs differing only in these are stepped once
_NOT_STRUCTURAL = {"learning_rate", "momentum", "weight_decay", "batch_size", "epochs", "lr_schedule", "lr_patience",
                   "lr_factor", "patience", "seed", "split_seed", "val_size", "train_subset", "device", "amp",
                   "eval_test", "conv_dropout", "dropout", "label_smoothing", "keep"}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def dataset_of(space: Path) -> str:
    stem = space.stem
    if stem.startswith("mnist") or stem == "seeds":
        return "mnist"
    if stem.startswith("fmnist"):
        return "fmnist"
    if stem.startswith("cifar10"):
        return "cifar10"
    raise AssertionError(f"search space {space.name}: no dataset known for this file name; extend dataset_of")


def drawn_configs(space: Path, draws: int = DRAWS) -> list[config.TrialConfig]:
    rng = random.Random(0)
    spec = search_space.load_space(str(space))
    # the seeds space runs a baseline with 5 seeds; the ones that name their own dataset (airbench: CIFAR-10) aside
    layers = [p for p in map(config.load_params_file, map(str, BASELINES)) if "dataset" not in p] \
        if space.stem == "seeds" else [{}]
    dataset = {"dataset": dataset_of(space)}
    return [config.resolve(base, search_space.sample(spec, rng), dataset)
            for _ in range(draws) for base in layers]


def distinct(configs):
    seen = {}
    for cfg in configs:
        key = tuple(sorted((k, v) for k, v in cfg.to_dict().items() if k not in _NOT_STRUCTURAL))
        seen.setdefault(key, cfg)
    return list(seen.values())


def one_step(cfg: config.TrialConfig, export: bool = False) -> None:
    """Build for the dataset's shape, forward a batch of 4, one optimizer step; loss and weights stay finite; with
    `export`, torch.export traces the stepped model and gives its eager output."""
    info = INFO[cfg.dataset]
    torch.manual_seed(0)
    net = model.build_model(cfg, info.shape)
    net.train()
    x = normalise(torch.randint(0, 256, (BATCH, *info.shape), dtype=torch.uint8), info, torch.device("cpu"))
    if cfg.augment:
        x = augment.augment(x, info)
    y = torch.arange(BATCH) % 10
    opt = optim.OPTIMIZERS[cfg.optimizer](optim.param_groups(net, cfg), cfg)
    out = net(x)
    assert out.shape == (BATCH, 10), cfg
    loss = optim.LOSSES[cfg.loss](cfg)(out, y)
    assert math.isfinite(float(loss.detach())), cfg
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters()), cfg
    if export:
        net.eval()
        program = torch.export.export(net, (x,))
        torch.testing.assert_close(program.module()(x), net(x))


def test_every_search_space_has_a_dataset():
    assert SPACES, "no search spaces found"
    for space in SPACES:
        dataset_of(space)


@pytest.mark.parametrize("space,draws", [pytest.param(s, n, marks=[pytest.mark.slow] if n == DRAWS else [],
                                                      id=f"{s.stem}-{n}") for s in SPACES for n in (FAST_DRAWS, DRAWS)])
def test_every_drawn_config_builds_and_trains_one_step(space, draws):
    """...and, for the network-family spaces in the slow tier, exports (the fast tier exports every family in
    tests/test_recipe.py)."""
    configs = drawn_configs(space, draws)
    assert all(c.dataset == dataset_of(space) for c in configs)
    for cfg in distinct(configs):
        one_step(cfg, export=draws == DRAWS and space.stem.endswith("_families"))


@pytest.mark.parametrize("space", SPACES, ids=[s.stem for s in SPACES])
def test_draws_are_seeded(space):
    assert search_space.sample_file(str(space), seed=3) == search_space.sample_file(str(space), seed=3)


@pytest.mark.parametrize("dataset", INFO)
@pytest.mark.parametrize("baseline", BASELINES, ids=[b.stem for b in BASELINES])
def test_every_baseline_builds_for_every_dataset(baseline, dataset):
    params = config.load_params_file(str(baseline))
    if not INFO[dataset].mirror_safe and str(params.get("tta", "none")).startswith("mirror"):
        with pytest.raises(config.ConfigError, match="mirror"):    # a mirrored digit is no digit: refused
            config.resolve(params, {"dataset": dataset})
        return
    one_step(config.resolve(params, {"dataset": dataset}))


@pytest.mark.parametrize("field", sorted(config.CHOICES))
def test_every_name_of_every_table_is_accepted_and_builds(field, tmp_path):
    """The config's accepted names are the tables' keys: each one resolves, and builds and steps where it shapes
    the model or its training. resize_mode, a key of datasets given by path, resolves for a folder of images."""
    if field == "resize_mode":
        from PIL import Image
        for label in ("a", "b"):
            (tmp_path / label).mkdir()
            for i in range(6):
                Image.new("L", (20 + i, 16), color=40 * i).save(tmp_path / label / f"{i}.png")
        for name in config.CHOICES[field]:
            cfg = config.resolve({"dataset": str(tmp_path), "image_size": 16, "filters": 4, "dense_units": 8},
                                 {field: name})
            assert cfg.resize_mode == name
        return
    for name in config.CHOICES[field]:
        small = {"dataset": "fmnist", "filters": 4, **({} if field == "family" and name != "plain" else
                                                        {"dense_units": 8})}   # dense_units is the plain head's
        if field == "family" and name == "nas":   # its network is all in its architecture
            small = {"dataset": "fmnist", "nas_arch": sample_arch(random.Random(0)), "width_mult": 0.25}
        if field == "family" and name == "resnet18":   # torchvision's, fixed: no key shapes it
            small = {"dataset": "fmnist"}
        cfg = config.resolve(small, {field: name})
        assert getattr(cfg, field) == name
        one_step(cfg)


@pytest.mark.parametrize("name", sorted(model.ACTIVATIONS))
def test_every_activation_builds(name):
    one_step(config.resolve({"dataset": "mnist", "activation": name, "filters": 4, "dense_units": 8}))


# ------------------------------------------------------------------------------------------------- augmentation
def _fill(dataset):
    return background_fill(INFO[dataset])


@pytest.mark.parametrize("dataset", INFO)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_keeps_shape_and_dtype(dataset, dtype):
    info = INFO[dataset]
    x = torch.randn(16, *info.shape, dtype=dtype)
    out = augment.augment(x, info)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_affine_without_motion_is_the_identity(monkeypatch):
    for name in ("SHIFT_PX", "ROTATE_DEG", "ZOOM"):
        monkeypatch.setattr(augment, name, 0.0)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(augment.affine(x, _fill("mnist")), x, atol=1e-5, rtol=1e-5)   # float32 resampling


def test_affine_fills_with_the_background(monkeypatch):
    """A blank (normalised pixel 0) image stays blank everywhere, including pixels moved in from outside."""
    fill = _fill("fmnist")
    blank = fill.view(1, 1, 1, 1).expand(8, 1, 28, 28).clone()
    torch.testing.assert_close(augment.affine(blank, fill), blank, atol=1e-5, rtol=0)
    # zoomed out, the border comes from outside the image: background, not 0
    for name, value in (("SHIFT_PX", 0.0), ("ROTATE_DEG", 0.0), ("ZOOM", 0.5)):
        monkeypatch.setattr(augment, name, value)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(*a[:2]))   # scale = 1 - ZOOM for every image
    out = augment.affine(torch.zeros(2, 1, 28, 28) + 5.0, fill)
    torch.testing.assert_close(out[:, :, 0, :], fill.expand(2, 28).view(2, 1, 28), atol=1e-5, rtol=0)


def test_affine_moves_images_independently():
    x = torch.randn(2, 1, 28, 28)
    x = torch.cat([x[:1], x[:1]])        # two equal images
    out = augment.affine(x, _fill("mnist"), torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1])


def test_crop_flip_takes_every_pixel_from_the_padded_image():
    n, pad = 24, augment.CROP_PAD
    x = torch.randn(n, 3, 32, 32)
    out = augment.crop_flip(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    used = set()
    for i in range(n):
        crops = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for flip in (False, True)
                 if torch.equal(out[i], (lambda c: c.flip(2) if flip else c)(padded[i, :, dy:dy + 32, dx:dx + 32]))]
        assert crops, f"image {i} is not a (flipped) crop of its padded input"
        used.update(crops)
    assert len(used) > 1, "every image got the same crop"


def test_the_config_picks_the_augmentation_kind():
    """`augmentation` overrides the dataset's own kind: "crop" translates and never mirrors, "crop_flip" on a 28x28
    set mirrors some images, "dataset" keeps the table's affine; an asymmetric image tells them apart."""
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 2:6] = 1.0                        # a bar near the left edge: a mirror moves it to the right
    info = INFO["fmnist"]
    torch.manual_seed(0)
    crop = augment.augment(x, info, crop_pad=2, kind="crop")
    assert crop[..., 14:].abs().sum() == 0, "'crop' mirrored an image"
    mirrored = augment.augment(x, info, crop_pad=2, kind="crop_flip")[..., 14:].flatten(1).abs().sum(1) > 0
    assert 0 < int(mirrored.sum()) < len(x)
    cfg = config.resolve({"dataset": "fmnist", "augment": True, "augmentation": "crop"})
    out = augment.training_transform(cfg, info)(x)
    assert out[..., 14:].abs().sum() == 0 and not torch.equal(out, x)


def test_augment_runs_on_a_single_image_and_a_large_batch():
    for n in (1, 512):
        assert augment.augment(torch.randn(n, 3, 32, 32), INFO["cifar10"]).shape == (n, 3, 32, 32)
        assert augment.augment(torch.randn(n, 1, 28, 28), INFO["mnist"]).shape == (n, 1, 28, 28)
