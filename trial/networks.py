"""Two fixed network families for image classification at any size: MNIST's 28x28x1 and CIFAR-10's 32x32x3, and a
user's own folder of images resized to 16..128 pixels, 1 (grey) or 3 (RGB) channels, 2 to a few hundred classes.

- `ResidualNet`: the CIFAR ResNet of He et al. 2016, "Deep Residual Learning for Image Recognition" (CVPR,
  arXiv:1512.03385, section 4.2), generalised to any number of stages, widths, both shortcut options (A: identity with
  zero padding, B: projection) and two ways of downsampling (strided conv, max pool).
- `AirbenchNet`: the network of Keller Jordan's airbench94 (https://github.com/KellerJordan/cifar10-airbench,
  `legacy/airbench94.py`, commit f1c599c; 94% on CIFAR-10 in 3.83 s on an A100): a frozen patch-whitening conv stem,
  three conv-pool-BN groups, global max pooling and a scaled linear head without bias.

Both take images as float tensors [N, C, H, W], normalised per channel, in the model's dtype, in either memory format
(channels_last included), and return logits [N, num_classes] in the same dtype. Their downsampling follows the input:
`residual_max_stages` and `airbench_max_groups` say how many stages or groups an image side allows (trial/config.py
refuses more in one line, naming `conv_layers`), and both end in a global pool, so the head's width never depends on
the image size. Neither has data-dependent Python control flow in `forward`, so `torch.export.export` traces them.
`act` is a factory `Callable[[int], nn.Module]` taking the channel count (so `nn.PReLU(c)` works too).

Example (CIFAR ResNet-20 with the paper's option A shortcuts, and airbench94 on Fashion-MNIST):

    import torch
    from trial.networks import AirbenchNet, ResidualNet

    resnet20 = ResidualNet((3, 32, 32), 10, stem_width=16, depths=[3, 3, 3], widths=[16, 32, 64], shortcut="identity")
    logits = resnet20(torch.randn(4, 3, 32, 32))                    # [4, 10]

    net = AirbenchNet((1, 28, 28), 10)
    net.init_whitening(train_images[:5000])                         # normalised float images [5000, 1, 28, 28]
    ...                                                             # train; after 3 epochs (airbench's schedule):
    net.whiten.bias.requires_grad_(False)                           # or net.set_whitening_bias_trainable(False)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["relu", "gelu", "scaled", "DOWNSAMPLES", "SHORTCUTS", "BasicBlock", "ResidualNet", "Whitening", "ConvGroup",
           "AirbenchNet", "residual_max_stages", "airbench_max_groups"]

Activation = Callable[[int], nn.Module]


def relu(channels: int) -> nn.Module:
    """In-place ReLU (the default of `ResidualNet`); `channels` is unused, it is there to fit the factory type."""
    return nn.ReLU(inplace=True)


def gelu(channels: int) -> nn.Module:
    """GELU, exact (erf) form (the default of `AirbenchNet`, as in airbench94); `channels` is unused."""
    return nn.GELU()


def _check_choice(argument: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{argument}: unknown {value!r}; valid: {', '.join(choices)}")


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape: expected (channels, height, width) of positive ints, got {tuple(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_common(num_classes: int, widths: Sequence[int], width_mult: float) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes: must be >= 1, got {num_classes}")
    if len(widths) == 0:
        raise ValueError("widths: must name at least one stage, got []")
    if any(w < 1 for w in widths):
        raise ValueError(f"widths: every width must be >= 1, got {list(widths)}")
    if not width_mult > 0:
        raise ValueError(f"width_mult: must be > 0, got {width_mult}")


def scaled(width: int, width_mult: float) -> int:
    """A channel count times the width multiplier, rounded, at least 1 (every family's `width_mult`)."""
    return max(1, round(width * width_mult))


def residual_max_stages(side: int) -> int:
    """The most stages `ResidualNet` takes for an image side: stage 0 keeps the resolution and every later stage
    halves it, rounding up, until 1x1 (16 -> 8 -> 4 -> 2 -> 1: 5 stages; 28 and 32: 6)."""
    halvings = 0
    while side > 1:
        side, halvings = (side + 1) // 2, halvings + 1
    return halvings + 1


def airbench_max_groups(side: int) -> int:
    """The most groups `AirbenchNet` takes for an image side: the 2x2 whitening stem takes one pixel off, then each
    group halves the map, rounding down, and the map must stay at least 1x1 (16 -> 15 -> 7 -> 3 -> 1: 3 groups; 20, 28
    and 32: 4; 64: 5; 128: 6). 0 for a side below 3."""
    return max(side - 1, 1).bit_length() - 1


# ---------------------------------------------------------------------------------------------------------------------
# Residual family (He et al. 2016)
# ---------------------------------------------------------------------------------------------------------------------

# the accepted names here and in trial.config (SHORTCUTS: with their builders, below), in the order messages list them
DOWNSAMPLES = ("stride", "pool")


class PadShortcut(nn.Module):
    """He et al.'s option A shortcut: parameter-free; keeps every 2nd row and column, zero-pads the new channels.

    Input [N, in_ch, H, W] -> output [N, out_ch, ceil(H / stride), ceil(W / stride)], same dtype. Subsampling by
    slicing rounds up, as a stride-2 3x3 conv with padding 1 does, so the two branches of a block always agree.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = x[:, :, ::2, ::2]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))    # pads dim 1 (channels) at the end; dims 3, 2 untouched
        return x


def _identity_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if out_ch < in_ch:
        # option A cannot drop channels without a parameter: the paper only ever widens
        raise ValueError(f"shortcut: 'identity' needs non-decreasing widths, got {in_ch} -> {out_ch} channels; "
                         "use shortcut='projection'")
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return PadShortcut(in_ch, out_ch, stride)


def _projection_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


SHORTCUTS = {"projection": _projection_shortcut, "identity": _identity_shortcut}   # name -> builder


class BasicBlock(nn.Module):
    """Residual basic block: act(BN(conv3x3(act(BN(conv3x3(x))))) + shortcut(x)) (He et al. 2016, figure 2).

    Args:
        in_ch, out_ch: input and output channels (>= 1).
        stride: 1 keeps the resolution, 2 halves it (rounding up: 7x7 -> 4x4).
        downsample: how a stride-2 block halves the map. "stride": the first conv has stride 2 (the paper);
            "pool": a 2x2 max pool (ceil_mode, so odd sizes round up) before the block, then both convs and the
            shortcut run at stride 1 on the pooled map.
        shortcut: "identity" (the paper's option A: no parameters; subsample and zero-pad the extra channels when
            the shape changes; needs out_ch >= in_ch) or "projection" (option B: 1x1 conv + BN when the shape
            changes, identity otherwise).
        act: activation factory, called with out_ch. In-place activations are safe: they only ever run on tensors
            that the shortcut does not read.

    Input [N, in_ch, H, W] float -> output [N, out_ch, ceil(H / stride), ceil(W / stride)], same dtype.

    Raises:
        ValueError: stride not 1 or 2, unknown downsample or shortcut, channels < 1, or shortcut="identity" with
            out_ch < in_ch; the message names the argument.

    Convs have no bias (BN follows); initialisation is left to `ResidualNet` (PyTorch's default when used alone).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, downsample: str = "stride",
                 shortcut: str = "projection", act: Activation = relu):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride: must be 1 or 2, got {stride}")
        _check_choice("downsample", downsample, DOWNSAMPLES)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"in_ch, out_ch: must be >= 1, got {in_ch}, {out_ch}")
        pooled = downsample == "pool" and stride == 2
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if pooled else nn.Identity()
        conv_stride = 1 if pooled else stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = act(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = SHORTCUTS[shortcut](in_ch, out_ch, conv_stride)
        self.act2 = act(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))    # `+` makes a new tensor, so act2 may work in place


class ResidualNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): stem, stages of `BasicBlock`s, global average pool, linear.

    The paper's CIFAR ResNet-(6n+2) is `ResidualNet((3, 32, 32), 10, 16, [n, n, n], [16, 32, 64],
    shortcut="identity")` (n = 3 gives ResNet-20, 0.27M parameters).

    Args:
        shape: input (channels, height, width), e.g. (1, 28, 28) or (3, 32, 32); any C, H, W >= 1.
        num_classes: number of logits (>= 1).
        stem_width: channels of the stem, a 3x3 stride-1 conv + BN + act.
        depths: blocks per stage (each >= 1). Stage 0 keeps the resolution; every later stage halves it in its first
            block, rounding up (28 -> 14 -> 7 -> 4 -> 2 -> 1), so a side allows `residual_max_stages(side)` stages.
        widths: channels per stage, one per entry of depths.
        downsample, shortcut: see `BasicBlock`.
        act: activation factory `Callable[[int], nn.Module]` taking the channel count; default in-place ReLU.
        dropout: probability (0 <= p < 1) of dropping a pooled feature before the head; 0 adds no layer.
        width_mult: multiplies stem_width and every width, then rounds: max(1, round(w * width_mult)).
        zero_init_residual: start each block's last BN weight at 0, so every block begins as its shortcut (Goyal et
            al. 2017, "Accurate, Large Minibatch SGD", section 5.1; torchvision's resnet option of the same name).

    Input [N, C, H, W] float (normalised) -> logits [N, num_classes], same dtype.

    Initialisation (torchvision's resnet): convs kaiming normal (fan_out, relu), BN weight 1 and bias 0, the head
    PyTorch's default.

    Raises:
        ValueError: with one line naming the argument, for a bad shape, num_classes < 1, empty depths, len(depths) !=
            len(widths), a depth or width < 1, unknown downsample or shortcut, dropout outside [0, 1), width_mult <= 0,
            more stages than the map can be halved before it reaches 1x1, or shortcut="identity" with a width smaller
            than the one before it.
    """

    def __init__(self, shape: Sequence[int], num_classes: int, stem_width: int, depths: Sequence[int],
                 widths: Sequence[int], downsample: str = "stride", shortcut: str = "projection",
                 act: Activation = relu, dropout: float = 0.0, width_mult: float = 1.0,
                 zero_init_residual: bool = False):
        super().__init__()
        channels, height, width = _check_shape(shape)
        if len(depths) == 0:
            raise ValueError("depths: must name at least one stage, got []")
        if len(depths) != len(widths):
            raise ValueError(f"depths, widths: need one width per stage, got {len(depths)} depths and "
                             f"{len(widths)} widths")
        if any(d < 1 for d in depths):
            raise ValueError(f"depths: every depth must be >= 1, got {list(depths)}")
        _check_common(num_classes, widths, width_mult)
        if stem_width < 1:
            raise ValueError(f"stem_width: must be >= 1, got {stem_width}")
        _check_choice("downsample", downsample, DOWNSAMPLES)
        _check_choice("shortcut", shortcut, SHORTCUTS)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        most = residual_max_stages(min(height, width))
        if len(depths) > most:
            raise ValueError(f"depths: {len(depths)} stages halve the map {len(depths) - 1} times, but a "
                             f"{height}x{width} input reaches 1x1 after {most - 1}; use at most {most} stages")

        stem = scaled(stem_width, width_mult)
        self.stem = nn.Sequential(nn.Conv2d(channels, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), act(stem))
        stages, in_ch = [], stem
        for index, (depth, w) in enumerate(zip(depths, widths)):
            out_ch = scaled(w, width_mult)
            blocks = [BasicBlock(in_ch if b == 0 else out_ch, out_ch, 2 if index > 0 and b == 0 else 1,
                                 downsample, shortcut, act) for b in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(in_ch, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.dropout(torch.flatten(self.pool(x), 1)))


# ---------------------------------------------------------------------------------------------------------------------
# Fast-training family (airbench94)
# ---------------------------------------------------------------------------------------------------------------------


PATCH_CHUNK = 1 << 26   # values of the patch matrix `init_whitening` holds at once (256 MB in float32)


class Whitening(nn.Conv2d):
    """airbench94's stem: a kxk conv whose frozen weight whitens image patches, and whose bias is trained.

    Conv2d(in_ch, 2 * in_ch * k * k, kernel_size=k, padding=0, bias=True): input [N, in_ch, H, W] float -> output
    [N, 2 * in_ch * k * k, H - k + 1, W - k + 1], same dtype. The weight is frozen (requires_grad False) from the
    start and must be set by `init_whitening` before training; until then it holds airbench's conv init (PyTorch's
    default with a dirac on the first in_ch filters). The bias starts at 0 and is trainable; airbench94 trains it for
    the first 3 epochs only (`hyp['opt']['whiten_bias_epochs']`), see `AirbenchNet.set_whitening_bias_trainable`.

    Source: `init_whitening_conv`, `get_patches`, `get_whitening_parameters` in airbench94.py (URL in the module
    docstring).

    Raises:
        ValueError: in_ch or kernel_size < 1.
    """

    def __init__(self, in_ch: int, kernel_size: int = 2):
        if in_ch < 1 or kernel_size < 1:
            raise ValueError(f"in_ch, kernel_size: must be >= 1, got {in_ch}, {kernel_size}")
        super().__init__(in_ch, 2 * in_ch * kernel_size ** 2, kernel_size, padding=0, bias=True)
        with torch.no_grad():
            nn.init.zeros_(self.bias)
            nn.init.dirac_(self.weight[:in_ch])
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_whitening(self, train_images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the weight to whiten the kxk patches of `train_images`, as airbench94's `init_whitening_conv`.

        Every kxk patch (stride 1, no padding) of every image is flattened to a vector p of in_ch * k * k values; with
        the uncentred patch covariance S = mean(p p^T) = V diag(lambda) V^T (eigenvalues in decreasing order), filter
        i of the first half is V[:, i] / sqrt(lambda_i + eps) and the second half is its negation, so that GELU
        passes both signs. On those patches the first half's outputs then have covariance diag(lambda / (lambda +
        eps)), which is the identity wherever lambda >> eps.

        Args:
            train_images: float tensor [N, in_ch, H, W] (H, W >= k), normalised as the training batches will be
                (zero mean and unit std per channel, so S is the covariance); any device. A few thousand images are
                enough (airbench94 uses 5000). The patches are summed in chunks of at most PATCH_CHUNK values
                (256 MB in float32: 5000 CIFAR images, 230 MB, are one chunk, as in airbench94; 5000 RGB images at
                128x128, 3.9 GB of patches, are 15).
            eps: added to each eigenvalue, in units of the patch covariance (squared normalised pixel values);
                airbench94's 5e-4. Larger values damp the directions of smallest variance (pixel noise).

        The decomposition runs in float32 on the images' device; the result is copied into the weight in its dtype
        and device.

        Raises:
            ValueError: train_images is not a 4-D floating-point tensor with in_ch channels and H, W >= k, or
                eps < 0.
        """
        in_ch, (kh, kw) = self.in_channels, self.kernel_size
        if (train_images.dim() != 4 or not train_images.is_floating_point() or train_images.shape[1] != in_ch
                or train_images.shape[2] < kh or train_images.shape[3] < kw):
            raise ValueError(f"train_images: expected a float tensor [N, {in_ch}, H >= {kh}, W >= {kw}], got "
                             f"{train_images.dtype} {list(train_images.shape)}")
        if eps < 0:
            raise ValueError(f"eps: must be >= 0, got {eps}")
        dim = in_ch * kh * kw
        per_image = (train_images.shape[2] - kh + 1) * (train_images.shape[3] - kw + 1) * dim
        step = max(1, PATCH_CHUNK // per_image)
        total, count = None, 0
        for chunk in train_images.split(step):
            patches = chunk.unfold(2, kh, 1).unfold(3, kw, 1).transpose(1, 3).reshape(-1, dim).float()
            part = patches.T @ patches
            total, count = part if total is None else total + part, count + len(patches)
        covariance = total / count
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
        # eigh sorts ascending; airbench flips to descending so the first filters carry the largest variance
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
        filters = (eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, in_ch, kh, kw)
        self.weight.copy_(torch.cat((filters, -filters)))


def _airbench_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    with torch.no_grad():
        # airbench94's Conv.reset_parameters: the first in_ch filters start as the identity, so each group begins
        # by passing its input through; dirac_ handles out_ch < in_ch (it sets min(out_ch, in_ch) filters)
        nn.init.dirac_(conv.weight[:in_ch])
    return conv


def _airbench_norm(channels: int, bn_momentum: float) -> nn.BatchNorm2d:
    # airbench's momentum is the weight kept on the old running statistic (running = m * running + (1 - m) * batch);
    # PyTorch's is the weight given to the new batch (running = (1 - m) * running + m * batch): convert with 1 - m
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - bn_momentum)
    norm.weight.requires_grad_(False)    # fixed at 1: scale is left to the next conv (airbench94's BatchNorm)
    return norm


class ConvGroup(nn.Module):
    """airbench94's ConvGroup: conv3x3 -> MaxPool2d(2) -> BN -> act -> conv3x3 -> BN -> act.

    Args:
        in_ch, out_ch: channels (>= 1).
        bn_momentum: airbench's convention, the weight kept on the old running statistics per step (0 <= m < 1;
            airbench94: 0.6, i.e. PyTorch momentum 0.4).
        act: activation factory, called once per activation with out_ch; airbench94 uses GELU.

    Input [N, in_ch, H, W] float -> output [N, out_ch, H // 2, W // 2], same dtype (the pool rounds down, as
    airbench's does: 27 -> 13).

    Convs are 3x3, padding 1, no bias, PyTorch's default init with the first in_ch filters set to the identity
    (dirac). BNs (`norm1`, `norm2`) have eps 1e-12 and a weight fixed at 1 (requires_grad False); only the bias is
    trained. airbench94 puts every trainable parameter whose name contains "norm" in a group with a 64x learning
    rate; the names here keep that rule working.

    Raises:
        ValueError: in_ch or out_ch < 1, or bn_momentum outside [0, 1).
    """

    def __init__(self, in_ch: int, out_ch: int, bn_momentum: float = 0.6, act: Activation = gelu):
        super().__init__()
        if in_ch < 1 or out_ch < 1:
            raise ValueError(f"in_ch, out_ch: must be >= 1, got {in_ch}, {out_ch}")
        if not 0 <= bn_momentum < 1:
            raise ValueError(f"bn_momentum: must be in [0, 1) (airbench's convention, 0.6 in airbench94), got "
                             f"{bn_momentum}")
        self.conv1 = _airbench_conv(in_ch, out_ch)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _airbench_norm(out_ch, bn_momentum)
        self.act1 = act(out_ch)
        self.conv2 = _airbench_conv(out_ch, out_ch)
        self.norm2 = _airbench_norm(out_ch, bn_momentum)
        self.act2 = act(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """airbench94's network: whitening stem -> act -> ConvGroups -> global max pool -> linear (no bias) -> * scale.

    Source: `make_net` and `hyp['net']` in airbench94.py (URL in the module docstring); the defaults are its values.
    airbench's fixed MaxPool2d(3) becomes a global max pool so that any input size works: 32x32 -> 31 -> 15 -> 7 -> 3
    and 28x28 -> 27 -> 13 -> 6 -> 3, both then 1; 16x16 -> 15 -> 7 -> 3 -> 1 takes 3 groups at most, 128x128 takes
    up to 6 (`airbench_max_groups`). The stem whitens the 2x2 patches of any channel count: 2 * C * 4 filters (8 for
    grey images, 24 for RGB).

    Args:
        shape: input (channels, height, width), e.g. (3, 32, 32) or (1, 28, 28); any C >= 1, H, W >= 3.
        num_classes: number of logits (>= 1).
        widths: channels of each ConvGroup (airbench94: 64, 256, 256); any number of groups the input allows
            (`airbench_max_groups`).
        bn_momentum: airbench's convention (weight on the old running statistics), see `ConvGroup`.
        scaling_factor: dimensionless multiplier on the logits (airbench94: 1/9).
        act: activation factory `Callable[[int], nn.Module]` taking the channel count; default GELU.
        width_mult: multiplies every width, then rounds: max(1, round(w * width_mult)). The stem's width, 2 * C *
            2 * 2, is set by the input and not scaled.

    Input [N, C, H, W] float, normalised per channel -> logits [N, num_classes], same dtype. Call `init_whitening`
    with training images before training. airbench94 trains in half precision with the BNs kept in float32 and the
    model in channels_last; that is the training loop's choice, the module works in either.

    Raises:
        ValueError: with one line naming the argument, for a bad shape, num_classes < 1, empty widths, a width < 1,
            width_mult <= 0, bn_momentum outside [0, 1), or more groups than the input allows (each halves the map,
            rounding down, after the 2x2 stem takes 1 pixel off; the map must stay >= 1x1).
    """

    def __init__(self, shape: Sequence[int], num_classes: int, widths: Sequence[int] = (64, 256, 256),
                 bn_momentum: float = 0.6, scaling_factor: float = 1 / 9, act: Activation = gelu,
                 width_mult: float = 1.0):
        super().__init__()
        channels, height, width = _check_shape(shape)
        _check_common(num_classes, widths, width_mult)
        most = airbench_max_groups(min(height, width))
        if len(widths) > most:
            side = min(height, width) - 1    # the 2x2 whitening conv has no padding
            raise ValueError(f"widths: {len(widths)} groups halve the map {len(widths)} times, too many for a "
                             f"{height}x{width} input (after the stem: {side}x{side}); use at most {most} groups")
        self.scaling_factor = scaling_factor
        self.whiten = Whitening(channels, kernel_size=2)
        self.act = act(self.whiten.out_channels)
        groups, in_ch = [], self.whiten.out_channels
        for w in widths:
            out_ch = scaled(w, width_mult)
            groups.append(ConvGroup(in_ch, out_ch, bn_momentum, act))
            in_ch = out_ch
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(in_ch, num_classes, bias=False)

    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem's frozen weight from training images: see `Whitening.init_whitening`.

        Args:
            images: normalised float tensor [N, C, H, W] of training images (never validation or test), a few
                thousand (airbench94: 5000).
            eps: airbench94's 5e-4, in units of the patch covariance.
        """
        self.whiten.init_whitening(images, eps)

    def set_whitening_bias_trainable(self, trainable: bool) -> None:
        """Train (True, the initial state) or freeze the stem's bias, the parameter named `whiten.bias`.

        airbench94 trains it for the first 3 epochs, then freezes it. Keep it in the optimizer: with
        `zero_grad(set_to_none=True)` (PyTorch's default) a frozen parameter has no gradient and SGD skips it,
        weight decay included.
        """
        self.whiten.bias.requires_grad_(trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.head(torch.flatten(self.pool(x), 1)) * self.scaling_factor
