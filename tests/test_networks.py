"""The residual and airbench network families build for every dataset shape, train, export, whiten and reject bad input.

Random tensors only, no datasets; a few seconds in all:

    .venv/bin/python -m pytest -q tests/test_networks.py -p no:cacheprovider
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trial.networks import AirbenchNet, BasicBlock, ResidualNet, Whitening

SHAPES = [(1, 28, 28), (3, 32, 32)]
BATCH = 4
CLASSES = 10

RESIDUAL = {    # small widths keep it fast; together they cover both shortcuts, both downsamples, 1 to 4 stages
    "one_stage": dict(stem_width=8, depths=[1], widths=[8]),
    "paper_option_a": dict(stem_width=8, depths=[2, 1, 1], widths=[8, 16, 32], shortcut="identity", width_mult=0.5),
    "pool_projection": dict(stem_width=8, depths=[1, 2], widths=[16, 8], downsample="pool", dropout=0.2),
    "four_stages_pool_a": dict(stem_width=4, depths=[1, 1, 1, 1], widths=[4, 8, 8, 16], downsample="pool",
                               shortcut="identity", width_mult=2, zero_init_residual=True),
    "prelu_wide": dict(stem_width=6, depths=[1, 1], widths=[6, 12], act=lambda c: nn.PReLU(c), width_mult=2),
}
AIRBENCH = {
    "default": dict(),
    "half": dict(width_mult=0.5),
    "double_two_groups": dict(widths=(8, 16), width_mult=2, act=lambda c: nn.ReLU(inplace=True)),
}
CASES = ([pytest.param(ResidualNet, kw, id=f"residual-{name}") for name, kw in RESIDUAL.items()]
         + [pytest.param(AirbenchNet, kw, id=f"airbench-{name}") for name, kw in AIRBENCH.items()])


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cls, kwargs", CASES)
def test_builds_trains_and_exports(cls, kwargs, shape):
    torch.manual_seed(0)
    model = cls(shape, CLASSES, **kwargs)
    if cls is AirbenchNet:
        model.init_whitening(torch.randn(32, *shape))
    x = torch.randn(BATCH, *shape)
    logits = model.train()(x)
    assert logits.shape == (BATCH, CLASSES)
    F.cross_entropy(logits, torch.randint(0, CLASSES, (BATCH,))).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        eager = model(x)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), eager)
        torch.testing.assert_close(model.to(memory_format=torch.channels_last)(
            x.to(memory_format=torch.channels_last)), eager, rtol=1e-4, atol=1e-5)


def test_paper_sizes():
    # ResNet-20 has 0.27M parameters (He et al. 2016, table 6); airbench94 about 1.97M
    resnet20 = ResidualNet((3, 32, 32), CLASSES, 16, [3, 3, 3], [16, 32, 64], shortcut="identity")
    assert sum(p.numel() for p in resnet20.parameters()) == 269_722
    assert sum(p.numel() for p in AirbenchNet((3, 32, 32), CLASSES).parameters()) == 1_972_792


def test_identity_shortcut_is_parameter_free_subsample_and_zero_pad():
    block = BasicBlock(4, 8, stride=2, shortcut="identity")
    x = torch.randn(2, 4, 7, 7)
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    out = block.shortcut(x)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out[:, :4], x[:, :, ::2, ::2])
    assert (out[:, 4:] == 0).all()
    assert block(x).shape == (2, 8, 4, 4)


def test_pool_downsample_rounds_up_and_strides_nothing():
    block = BasicBlock(4, 4, stride=2, downsample="pool", shortcut="projection")
    assert block.conv1.stride == (1, 1) and isinstance(block.shortcut, nn.Identity)
    assert block(torch.randn(2, 4, 7, 7)).shape == (2, 4, 4, 4)


def test_zero_init_residual_starts_each_block_as_its_shortcut():
    model = ResidualNet((1, 28, 28), CLASSES, 8, [2], [8], zero_init_residual=True).eval()
    x = torch.relu(torch.randn(2, 8, 28, 28))    # a block's input is the output of a ReLU
    with torch.no_grad():
        torch.testing.assert_close(model.stages[0][0](x), x)


def test_airbench_batchnorm_follows_airbench94():
    group = AirbenchNet((3, 32, 32), CLASSES).groups[0]
    assert group.norm1.momentum == pytest.approx(0.4) and group.norm1.eps == 1e-12
    assert not group.norm1.weight.requires_grad and group.norm1.bias.requires_grad
    assert group.conv1.bias is None
    torch.testing.assert_close(group.conv1.weight[:24, :, 1, 1], torch.eye(24))    # dirac on the first in_ch


def test_whitening_bias_can_be_frozen():
    model = AirbenchNet((1, 28, 28), CLASSES)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    model.set_whitening_bias_trainable(False)
    assert not dict(model.named_parameters())["whiten.bias"].requires_grad


def smoothed_noise(n: int, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated, normalised per channel."""
    noise = torch.randn(n, channels, size + 4, size + 4, generator=generator)
    smooth = F.avg_pool2d(noise, 5, stride=1)                                   # neighbouring pixels correlate
    mix = torch.eye(channels) + 0.8 * torch.ones(channels, channels)            # so do channels
    images = torch.einsum("dc,nchw->ndhw", mix, smooth)
    return (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)


def covariance(rows: torch.Tensor) -> torch.Tensor:
    """Second moment of the rows of [M, D] (the covariance, for the zero-mean images used here), in float64."""
    rows = rows.double()
    return rows.T @ rows / len(rows)


@pytest.mark.parametrize("channels", [1, 3])
def test_whitening_whitens_patches(channels):
    images = smoothed_noise(64, channels, 32, torch.Generator().manual_seed(0))
    stem = Whitening(channels)
    half = stem.out_channels // 2
    raw = covariance(F.unfold(images, 2).transpose(1, 2).reshape(-1, half))    # 2x2 patches, one per row
    assert (raw - torch.eye(half, dtype=raw.dtype)).abs().max() > 0.5    # far from white, so the test can fail

    stem.init_whitening(images, eps=1e-6)    # far below the smallest patch eigenvalue, so eps barely shrinks it
    with torch.no_grad():
        outputs = F.conv2d(images, stem.weight[:half])    # before bias and activation
    white = covariance(outputs.permute(0, 2, 3, 1).reshape(-1, half))    # over images and positions
    assert (white - torch.eye(half, dtype=white.dtype)).abs().max() < 0.1
    torch.testing.assert_close(stem.weight[half:], -stem.weight[:half])


INVALID = [
    (lambda: ResidualNet((1, 28, 28), 10, 8, [], []), "depths"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1, 1], [8]), "depths, widths"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1, 0], [8, 8]), "depths"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1], [8], downsample="avg"), "downsample"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1], [8], shortcut="B"), "shortcut"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1] * 7, [8] * 7), "depths"),    # 28 -> 1 after 5 halvings
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1, 1], [16, 8], shortcut="identity"), "shortcut"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1], [0]), "widths"),
    (lambda: ResidualNet((1, 28, 28), 10, 0, [1], [8]), "stem_width"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1], [8], dropout=1.0), "dropout"),
    (lambda: ResidualNet((1, 28, 28), 10, 8, [1], [8], width_mult=0), "width_mult"),
    (lambda: ResidualNet((28, 28), 10, 8, [1], [8]), "shape"),
    (lambda: ResidualNet((1, 28, 28), 0, 8, [1], [8]), "num_classes"),
    (lambda: BasicBlock(8, 8, stride=3), "stride"),
    (lambda: AirbenchNet((3, 32, 32), 10, widths=()), "widths"),
    (lambda: AirbenchNet((3, 32, 32), 10, widths=(8,) * 5), "widths"),    # 31 -> 15 -> 7 -> 3 -> 1 -> 0
    (lambda: AirbenchNet((3, 32, 32), 10, bn_momentum=1.0), "bn_momentum"),
    (lambda: AirbenchNet((3, 32, 32), 10, width_mult=-1), "width_mult"),
    (lambda: AirbenchNet((3, 32, 32), 10).init_whitening(torch.randn(4, 1, 32, 32)), "train_images"),
    (lambda: AirbenchNet((3, 32, 32), 10).init_whitening(torch.randn(4, 3, 32, 32), eps=-1), "eps"),
]


@pytest.mark.parametrize("build, argument", INVALID, ids=[f"{i}-{arg}" for i, (_, arg) in enumerate(INVALID)])
def test_invalid_arguments_raise_naming_the_argument(build, argument):
    with pytest.raises(ValueError) as error:
        build()
    message = str(error.value)
    assert message.startswith(f"{argument}:") and "\n" not in message
