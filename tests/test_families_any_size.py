"""Every network family and every shipped search space builds, trains a step and exports for the images of a dataset
given by path: any side from 16 to 128 pixels, 1 (grey) or 3 (RGB) channels, 2 to a few hundred classes; configs
that cannot fit a small image are refused in one line naming the key; augmentation scales to the image side and
mirrors only what the user calls mirror-safe.

Random tensors and a DatasetInfo built here stand in for a folder (one test decodes a real tiny folder). The fast
tier builds and steps every family on every case of the grid (sizes 20, 48, 64, 96; 1 and 3 channels; 2 and 37
classes) and exports one case per family; the slow tier exports every case and steps draws of every search space at
every size:

    .venv/bin/pytest tests/test_families_any_size.py -q -m "not slow"
"""
from __future__ import annotations

import inspect
import math
import random

import pytest
import torch
from PIL import Image

from trial import REPO, augment, config, data, networks, optim, search_space
from trial.model import FAMILIES, build_model
from trial.nas_space import NasNet, sample_arch
from trial.networks import AirbenchNet

SPACES = sorted((REPO / "search_spaces").glob("*.json"))
SIZES = (20, 48, 64, 96)
CHANNELS = (1, 3)
CLASSES = (2, 37)
BATCH = 4
SPACE_DRAWS = 3          # per search space and size, slow tier


def _baseline(name: str) -> dict:
    params = config.load_params_file(str(REPO / "baselines" / name))
    params.pop("dataset", None)
    return params


# each family small: its baseline's shape (ResNet-20, airbench94 at half width) at a fraction of the width
SMALL = {
    "plain": {"family": "plain", "conv_layers": 3, "filters": 4, "dense_units": 8, "batch_norm": True},
    "residual": {**_baseline("resnet.json"), "blocks": 1, "width_mult": 0.25},
    "airbench": {**_baseline("airbench_cifar10_half.json"), "width_mult": 0.125},
    "nas": {"family": "nas", "nas_arch": sample_arch(random.Random(0)), "width_mult": 0.25},
    "resnet18": _baseline("resnet18_torchvision.json"),   # fixed: torchvision's as it is
}
# the case each family also exports in the fast tier: together every size and both channel counts
FAST_EXPORT = {"plain": (20, 1, 2), "residual": (48, 3, 37), "airbench": (96, 1, 37), "nas": (64, 3, 2),
               "resnet18": (20, 1, 37)}

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An existing path to name as the dataset: resolve checks only that it exists when image_size is given."""
    return tmp_path_factory.mktemp("images")


def path_info(root, side: int, channels: int, classes: int, mirror_safe: bool = False) -> data.DatasetInfo:
    """What trial/folder.py would build for a folder of `classes` classes of `channels`-channel images at `side`."""
    return data.DatasetInfo(str(root), str(root), (channels, side, side), (0.5,) * channels, (0.25,) * channels,
                            tuple(f"class {i}" for i in range(classes)), (), "crop", 255, "", mirror_safe=mirror_safe)


def resolve_for(root, side: int, *layers, mirror_safe: bool = True) -> config.TrialConfig:
    return config.resolve(*layers, {"dataset": str(root), "image_size": side, "mirror_safe": mirror_safe})


def step_and_export(cfg: config.TrialConfig, info: data.DatasetInfo, export: bool) -> None:
    """What train() does for one batch: build_model, the whitening of airbench's stem from training images, the
    config's augmentation, optimizer and loss; then the logits' shape, a finite loss and finite weights. With
    `export`, torch.export with a dynamic batch (as experiments/results/evaluate.py exports) gives eager's output."""
    classes = len(info.classes)
    torch.manual_seed(0)
    net = build_model(cfg, info.shape, classes)
    x = torch.randn(BATCH, *info.shape)
    if isinstance(net, AirbenchNet):
        net.init_whitening(torch.randn(16, *info.shape))
    transform = augment.training_transform(cfg, info)
    if transform is not None:
        x = transform(x)
    assert x.shape == (BATCH, *info.shape)
    opt = optim.OPTIMIZERS[cfg.optimizer](optim.param_groups(net, cfg), cfg)
    out = net.train()(x)
    assert out.shape == (BATCH, classes), (cfg.family, info.shape)
    loss = optim.LOSSES[cfg.loss](cfg)(out, torch.arange(BATCH) % classes)
    assert math.isfinite(float(loss.detach())), cfg
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters()), cfg
    if export:
        net.eval()
        program = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        three = torch.randn(3, *info.shape)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(three), net(three))


def grid(fast: bool):
    for family in sorted(FAMILIES):
        for side in SIZES:
            for channels in CHANNELS:
                for classes in CLASSES:
                    export = (side, channels, classes) == FAST_EXPORT[family] if fast else True
                    yield pytest.param(family, side, channels, classes, export,
                                       id=f"{family}-{side}px-{channels}ch-{classes}cls{'-export' if export else ''}"
                                          f"{'' if fast else '-slow'}",
                                       marks=[] if fast else [pytest.mark.slow])


@pytest.mark.parametrize("family, side, channels, classes, export", [*grid(fast=True), *grid(fast=False)])
def test_every_family_builds_steps_and_exports_at_any_size(folder, family, side, channels, classes, export):
    cfg = resolve_for(folder, side, SMALL[family], {"augment": True})
    step_and_export(cfg, path_info(folder, side, channels, classes, mirror_safe=True), export)


def test_the_grid_covers_every_family_and_exports_each_in_the_fast_tier():
    assert set(SMALL) == set(FAMILIES) == set(FAST_EXPORT)
    fast = [p.values for p in grid(fast=True)]
    assert len(fast) == len(FAMILIES) * len(SIZES) * len(CHANNELS) * len(CLASSES)
    assert sorted(f for f, *_, export in fast if export) == sorted(FAMILIES)


@pytest.mark.parametrize("side", [16, 128])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_ends_of_the_size_range(folder, family, side):
    """16 and 128 pixels, grey and RGB, 300 classes (a few hundred)."""
    for channels in CHANNELS:
        step_and_export(resolve_for(folder, side, SMALL[family]), path_info(folder, side, channels, 300), False)


def draw_trains_or_is_refused_for_its_size(folder, draw: dict, side: int, channels: int, *small) -> bool:
    """A search space's draw on a path dataset of `side` pixels either trains a step or is refused before training in
    one line that names a key and the largest value that fits, and only for the size: on 32x32 images it resolves.
    (The plain cifar10 space's kernel 5 in a 4th block fits CIFAR-10's 4x4 map, not a 20x20 image's 2x2.)
    True when it trained."""
    try:
        cfg = resolve_for(folder, side, draw, *small)
    except config.ConfigError as error:
        message = str(error)
        assert "\n" not in message and message.startswith("parameter '") and " <= " in message, message
        resolve_for(folder, 32, draw, *small)
        return False
    step_and_export(cfg, path_info(folder, side, channels, 37, mirror_safe=True), False)
    return True


@pytest.mark.parametrize("space", [pytest.param(s, marks=pytest.mark.slow, id=s.stem) for s in SPACES])
def test_every_search_space_draw_steps_at_every_size(folder, space):
    """Draws of every shipped search space (its full widths) on path datasets of every size; mirror draws need
    mirror_safe, given here (without it they are refused: test_mirrors_need_mirror_safe). From 24 pixels up every
    draw of every shipped space fits."""
    rng = random.Random(0)
    spec = search_space.load_space(str(space))
    for side in (16, *SIZES, 128):
        trained = [draw_trains_or_is_refused_for_its_size(folder, search_space.sample(spec, rng), side,
                                                          CHANNELS[i % 2]) for i in range(SPACE_DRAWS)]
        assert all(trained) or side < 24, (space.stem, side, trained)


def test_one_draw_of_every_search_space_steps_on_a_small_and_a_large_image(folder):
    rng = random.Random(1)
    trained = []
    for space in SPACES:
        spec = search_space.load_space(str(space))
        for side, channels in ((16, 1), (96, 3)):
            trained.append(draw_trains_or_is_refused_for_its_size(folder, search_space.sample(spec, rng), side,
                                                                  channels, {"filters": 8, "width_mult": 0.25}))
    assert sum(trained) >= len(trained) - 2, trained


# ------------------------------------------------------------------------------------------------- refusals
TOO_DEEP = [   # (params, image side, the key named, the largest value that fits)
    pytest.param({"family": "airbench", "conv_layers": 4, "filters": 8}, 16, "conv_layers", 3,
                 id="airbench-4-groups-16px"),
    pytest.param({"family": "airbench", "conv_layers": 6, "filters": 8}, 64, "conv_layers", 5,
                 id="airbench-6-groups-64px"),
    pytest.param({"family": "residual", "conv_layers": 6, "filters": 8}, 16, "conv_layers", 5,
                 id="residual-6-stages-16px"),
    pytest.param({"family": "plain", "conv_layers": 5, "kernel": 5}, 16, "kernel", 1,
                 id="plain-kernel-5-down-to-a-1px-map"),
    pytest.param({"family": "plain", "conv_layers": 4, "kernel_4": 5}, 20, "kernel_4", 3,
                 id="plain-kernel_4-5-on-a-2px-map"),
]


@pytest.mark.parametrize("params, side, key, largest", TOO_DEEP)
def test_a_config_that_cannot_fit_is_refused_in_one_line_naming_the_key(folder, params, side, key, largest):
    with pytest.raises(config.ConfigError) as error:
        resolve_for(folder, side, params)
    message = str(error.value)
    assert "\n" not in message and f"'{key}'" in message and f"{side}x{side}" in message
    assert f"{key} <= {largest}" in message
    resolve_for(folder, side, params, {key: largest})            # the largest value named fits
    if key == "conv_layers":
        with pytest.raises(config.ConfigError):
            resolve_for(folder, side, params, {key: largest + 1})


def test_a_config_that_fits_is_not_refused(folder):
    """The checks refuse only what does not fit: the deepest configs each side allows resolve and build."""
    for family, side, layers in (("airbench", 16, 3), ("airbench", 128, 6), ("residual", 16, 5),
                                 ("residual", 96, 6), ("plain", 16, 4)):
        cfg = resolve_for(folder, side, {"family": family, "conv_layers": layers, "filters": 4,
                                         **({"dense_units": 8} if family == "plain" else {})})
        net = build_model(cfg, (1, side, side), 2)
        assert net(torch.randn(2, 1, side, side)).shape == (2, 2)


def test_the_stage_limits_follow_the_side_not_the_benchmarks():
    """airbench took at most 4 groups whatever the size; now a 64x64 image takes 5 and a 128x128 one 6."""
    assert [networks.airbench_max_groups(s) for s in (16, 20, 28, 32, 64, 128)] == [3, 4, 4, 4, 5, 6]
    assert [networks.residual_max_stages(s) for s in (16, 20, 28, 32, 64, 128)] == [5, 6, 6, 6, 7, 8]
    with pytest.raises(ValueError, match="^widths: .* use at most 3 groups$"):
        AirbenchNet((1, 16, 16), 2, widths=[4] * 4)
    with pytest.raises(ValueError, match="^depths: .* use at most 5 stages$"):
        networks.ResidualNet((1, 16, 16), 2, 4, [1] * 6, [4] * 6)
    # the benchmark sets keep their limits
    with pytest.raises(config.ConfigError, match="conv_layers <= 4"):
        config.resolve({"dataset": "cifar10", "family": "airbench", "conv_layers": 5})


@pytest.mark.parametrize("mirror", [{"tta": "mirror"}, {"tta": "mirror_translate"},
                                    {"augment": True, "augmentation": "crop_flip"}], ids=lambda m: str(m))
def test_mirrors_need_mirror_safe(folder, mirror):
    with pytest.raises(config.ConfigError) as error:
        resolve_for(folder, 32, mirror, mirror_safe=False)
    assert "mirror_safe" in str(error.value) and "\n" not in str(error.value)
    resolve_for(folder, 32, mirror, mirror_safe=True)


def test_a_path_dataset_augments_by_crop_without_mirror(folder):
    """Its own kind ("dataset") is a crop: an image whose left half is lit never gets it on the right."""
    info = path_info(folder, 32, 1, 2)
    x = torch.zeros(256, 1, 32, 32)
    x[..., :12] = 1.0
    out = augment.augment(x, info, crop_pad=2)
    assert (out[..., 16:] == 0).all() and not torch.equal(out, x)


# ------------------------------------------------------------------------------------------------- augmentation
def largest_shift(out: torch.Tensor, row: int, col: int) -> int:
    """The largest distance (pixels, either axis) the one lit pixel at (row, col) moved, over a batch [N, 1, H, W]."""
    where = out[:, 0].flatten(1).argmax(1)
    side = out.shape[-1]
    rows, cols = where // side, where % side
    return int(max((rows - row).abs().max(), (cols - col).abs().max()))


@pytest.mark.parametrize("side, expected", [(16, 2), (32, 4), (64, 8), (128, 16)])
def test_crop_translation_scales_with_the_side(folder, side, expected):
    """crop_pad 4 was chosen for CIFAR-10's 32 pixels: a folder's images move the same share of their side."""
    info = path_info(folder, side, 1, 2)
    assert augment.crop_pixels(4, info) == expected
    x = torch.zeros(512, 1, side, side)
    centre = side // 2
    x[:, :, centre, centre] = 1.0
    torch.manual_seed(0)
    assert largest_shift(augment.augment(x, info, crop_pad=4, kind="crop"), centre, centre) == expected


def test_benchmark_sets_keep_their_magnitudes():
    for name in ("mnist", "cifar10"):
        info = data.INFO[name]
        assert augment.crop_pixels(4, info) == 4 and augment.crop_pixels(3, info) == 3
        assert augment.scaled_pixels(augment.SHIFT_PX, info, augment.AFFINE_SIDE) == augment.SHIFT_PX


def test_crop_padding_stays_below_the_side_and_above_zero(folder):
    small = path_info(folder, 16, 3, 2)
    assert augment.crop_pixels(16, small) == 8 and augment.crop_pixels(1, small) == 1
    assert augment.crop_pixels(0, small) == 0
    tiny = path_info(folder, 4, 3, 2)
    assert augment.crop_pixels(64, tiny) == 3                      # reflect padding needs pad < side
    assert augment.augment(torch.randn(4, 3, 4, 4), tiny, crop_pad=64).shape == (4, 3, 4, 4)


def test_affine_shift_scales_with_the_side(folder):
    """2 pixels of a 28x28 image: 2 * 96 / 28 of a 96x96 one (zoom and rotation are relative already)."""
    info = path_info(folder, 96, 1, 2)
    assert augment.scaled_pixels(augment.SHIFT_PX, info, augment.AFFINE_SIDE) == pytest.approx(2 * 96 / 28)
    fill = augment.background_fill(info).view(1, -1, 1, 1)
    x = fill.repeat(512, 1, 96, 96)
    x[:, :, 40:56, 40:56] += 1.0     # a lit square at the centre: zoom and rotation keep its centre of mass there
    torch.manual_seed(0)
    lit = augment.augment(x, info, kind="affine") - fill
    columns = lit[:, 0].sum(1)                                       # [N, W]
    centre = (columns * torch.arange(96.0)).sum(1) / columns.sum(1)
    shift = float((centre - 47.5).abs().max())
    # the output moves by the shift zoomed (up to 1.1x) and rotated (up to 10 degrees mixes in the other axis):
    # unscaled that is at most 2 * 1.1 * (cos 10 + sin 10) = 2.5 pixels, scaled 8.7
    most = 1.1 * (math.cos(math.radians(10)) + math.sin(math.radians(10)))
    assert 2 * most < 5 < shift < 2 * 96 / 28 * most, shift


@pytest.mark.parametrize("side, square", [(16, 4), (64, 16)])
def test_cutout_scales_with_the_side(folder, side, square):
    info = path_info(folder, side, 1, 2)
    cfg = resolve_for(folder, side, {"cutout": 8})
    torch.manual_seed(0)
    out = augment.training_transform(cfg, info)(torch.ones(256, 1, side, side))
    assert int((out == 0).flatten(1).sum(1).max()) == square * square


# ------------------------------------------------------------------------------------------------- airbench's stem
@pytest.mark.parametrize("channels", CHANNELS)
def test_whitening_takes_either_channel_count_and_chunks_large_images(monkeypatch, channels):
    """2 * C * 4 filters; patches summed in chunks whiten as one pass does (airbench94's): sum_i f_i f_i^T =
    (S + eps)^-1 over the first half's filters f_i, whatever signs eigh gives the eigenvectors."""
    images = torch.randn(24, channels, 96, 96).cumsum(3) / 10     # correlated neighbours: a non-trivial covariance

    def inverse_covariance(stem):
        half = stem.weight[:stem.out_channels // 2].reshape(stem.out_channels // 2, -1).double()
        return half.T @ half

    one = networks.Whitening(channels)
    one.init_whitening(images, eps=1e-2)
    assert one.out_channels == 2 * channels * 4
    monkeypatch.setattr(networks, "PATCH_CHUNK", 95 * 95 * channels * 4 * 5)    # 5 images per chunk: 5 chunks
    chunked = networks.Whitening(channels)
    chunked.init_whitening(images, eps=1e-2)
    patches = torch.nn.functional.unfold(images, 2).transpose(1, 2).reshape(-1, channels * 4).double()
    expected = torch.linalg.inv(patches.T @ patches / len(patches) + 1e-2 * torch.eye(channels * 4,
                                                                                      dtype=torch.double))
    tolerance = 1e-3 * float(expected.abs().max())      # float32 sums of 200,000 patches, then an inverse
    for stem in (one, chunked):
        torch.testing.assert_close(inverse_covariance(stem), expected, rtol=1e-2, atol=tolerance)


# ------------------------------------------------------------------------------------------------- classes
def write_folder(root, classes: int, per_class: int, size=(50, 70)) -> None:
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            colour = ((37 * c + 11 * i) % 256, (91 * c) % 256, (53 * i) % 256)
            Image.new("RGB", size, colour).save(root / f"class_{c}" / f"{i}.png")


def test_the_head_has_one_logit_per_class_of_the_dataset(isolated_env):
    """build_model without a class count reads it from the dataset: 3 folders, 3 logits (not 10)."""
    root = isolated_env / "three"
    write_folder(root, 3, 10)
    for family in sorted(FAMILIES):
        cfg = config.resolve(SMALL[family], {"dataset": str(root), "image_size": 24, "mirror_safe": True})
        net = build_model(cfg, (3, 24, 24))
        assert net(torch.randn(2, 3, 24, 24)).shape == (2, 3), family
    assert build_model(config.resolve({"dataset": "mnist", "filters": 4}), (1, 28, 28))(
        torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_no_class_count_is_a_default():
    """No network of trial/ assumes 10 classes: the class count is always the dataset's."""
    assert inspect.signature(build_model).parameters["num_classes"].default is None
    for cls in (networks.ResidualNet, AirbenchNet, NasNet):
        assert inspect.signature(cls).parameters["num_classes"].default is inspect.Parameter.empty, cls
