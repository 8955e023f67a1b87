"""Reference run: Keller Jordan's airbench94 CIFAR-10 recipe, ported to the CPU, kept out of the product.

Purpose
    A yardstick for our own training harness: the published airbench94 recipe (94.01% mean test accuracy in 3.83 s
    on an A100) run on the same data, hardware and epoch budget as our harness, so the two can be compared side by
    side. It follows the original line by line except where the CPU forces a change; every change is listed below
    and marked "CPU:" (or "PORT:") in a comment where it is made. Nothing in the product imports this file.

Source
    https://github.com/KellerJordan/cifar10-airbench, file legacy/airbench94.py at commit
    f1c599c4af24aca803e3e65a6a7e52a502e09d0e (2 Mar 2025). That file is byte-identical to airbench94.py at
    a017c418f077f707cd037a705146091e2e0e2e71 (11 Aug 2024), its last change; commit 1b8f794 only moved it to legacy/.
    It is the *uncompiled* variant (airbench94_compiled.py is the torch.compile one), so no compilation is dropped.

Recipe kept as published
    * whitening stem: 2x2 conv, 24 = 2*3*2*2 channels, weights set once from the eigenvectors of the covariance of
      2x2 patches of the first 5,000 (normalised, unaugmented) training images (eps 5e-4), +/- pairs, then frozen;
      its bias is trained for the first 3 epochs only;
    * three groups conv3x3-maxpool2-BN-GELU-conv3x3-BN-GELU, widths 64/256/256 (times --width-mult), convs
      without bias, identity (dirac) init on the first in_channels filters; BatchNorm with eps 1e-12, airbench
      momentum 0.6 (PyTorch momentum 0.4), weight frozen at 1, bias trained; maxpool 3, linear 256->10 without bias,
      scaled by 1/9;
    * SGD, Nesterov momentum 0.85, lr 11.5 and weight decay 0.0153 "per 1024 examples", turned into PyTorch's
      parameters as airbench does (lr / (1024 * (1 + 1/(1-momentum))), wd * batch_size / that same scale, given to
      each group as wd/lr so lr*wd is the same for every group); BatchNorm biases get lr * 64 (bias_scaler) with
      the same decay; summed (not averaged) label-smoothed (0.2) cross entropy; batch size 1024, last partial batch
      dropped;
    * lr factor: linear 0.2 -> 1.0 over the first 23% of steps, then linear 1.0 -> 0.07 (LambdaLR, stepped per batch);
    * lookahead: every 5 steps the weights (every float tensor of the state dict, BN running stats included) are
      pulled into an EMA with decay 0.95**5 * (step/total)**3 and copied back; at the very end the EMA is copied in;
      as in the original the EMA is cloned *before* the whitening init (a quirk kept on purpose);
    * augmentation: each image is flipped at random once, up front; all images are flipped together on every odd
      epoch (alternating flip); random translation by up to 2 pixels from a reflect-padded copy, every epoch;
    * 9.9 epochs (ceil(steps_per_epoch * epochs) steps); test accuracy each epoch without TTA, and at the end with
      TTA level 2 (mirror, plus one-pixel translations up-left and down-right on reflect padding, weighted 0.5/0.25/0.25).

What differs from the original and why
    1. CPU: fp32 everywhere by default. The original keeps weights *and* activations in fp16 on CUDA (no fp32 master
       copy; BatchNorm in fp32). fp16 convolutions are slow or missing on CPUs, so weights,
       activations and the optimiser state are fp32 here. `--bf16` runs the forward pass (train and eval) under
       torch.autocast("cpu", torch.bfloat16), which keeps fp32 master weights: closer in spirit to the original's
       16-bit compute, but not its 16-bit weight storage. It only pays on CPUs with avx512_bf16 (or AMX).
    2. CPU: the loss is computed on fp32 logits (the original feeds fp16 logits to the loss).
    3. CPU: wall-clock timing with time.perf_counter() instead of CUDA events. As in the original, the timed part
       is the whitening init plus the training loops (epoch-0 data preprocessing included); the per-epoch test
       evaluation is not timed; the final TTA evaluation is timed separately (airbench adds it to its total).
    4. PORT: one run with a given --seed (torch.manual_seed) instead of 25 unseeded runs summarised by mean and std;
       the "warmup" run, already commented out in the original, is not done.
    5. PORT: CIFAR-10 comes from the project's loader (trial.data.load: the same 50,000/10,000 images as uint8
       [N, 3, 32, 32]) instead of torchvision's download; normalisation is airbench's mean/std, written out instead
       of torchvision.transforms.Normalize (same arithmetic).
    6. PORT: the loader does not keep the unused preprocessed copies (normalised, pre-flipped) alive beside the
       padded one; memory only, same images.
    7. PORT: additions for our use, all defaulting to the recipe: --width-mult scales the widths (rounded, at
       least 1), --subset N trains on the first N training images (smoke runs only), --batch-size (recipe 1024;
       lr and wd are per 1024 examples and scale with it exactly as in the original), --threads, --json.
    8. PORT: the log is one line per epoch in our format, not airbench's table; the original's log.pt is not written.

Run (from the repository root)
    python -m experiments.studies.airbench_reference                       # the full recipe: 9.9 epochs, fp32
    python -m experiments.studies.airbench_reference --threads 16 --bf16 --json airbench.json
    python -m experiments.studies.airbench_reference --epochs 1 --width-mult 0.5 --subset 5000 --threads 1  # smoke
Data is looked for where trial.data looks (--data-dir, $CNNSEARCH_DATA, ..., ../shared/data).

Caveat for smoke runs (the original's behaviour, kept): the lookahead syncs only every 5 steps and the EMA is copied
into the net at the end, so a run of fewer than 5 steps ends with the *initial* weights (un-whitened stem, fresh BN
stats) and chance accuracy; e.g. --subset 5000 --epochs 1 is only 4 steps at batch 1024. To see learning in a smoke
run, give it more steps (for example --batch-size 256, 19 steps per 5,000 images).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from math import ceil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SOURCE_REPO = "https://github.com/KellerJordan/cifar10-airbench"
SOURCE_PATH = "legacy/airbench94.py"
SOURCE_COMMIT = "f1c599c4af24aca803e3e65a6a7e52a502e09d0e"

#############################################
#            Setup/Hyperparameters          #
#############################################

# Copied from the original. lr and weight_decay are in airbench's decoupled form (see its comment): per 1024
# examples, independent of momentum; they are turned into PyTorch's SGD parameters in train_reference.
hyp = {
    'opt': {
        'train_epochs': 9.9,
        'batch_size': 1024,
        'lr': 11.5,                 # learning rate per 1024 examples
        'momentum': 0.85,
        'weight_decay': 0.0153,     # weight decay per 1024 examples (decoupled from learning rate)
        'bias_scaler': 64.0,        # scales up learning rate (but not weight decay) for BatchNorm biases
        'label_smoothing': 0.2,
        'whiten_bias_epochs': 3,    # how many epochs to train the whitening layer bias before freezing
    },
    'aug': {
        'flip': True,
        'translate': 2,
    },
    'net': {
        'widths': {
            'block1': 64,
            'block2': 256,
            'block3': 256,
        },
        'batchnorm_momentum': 0.6,
        'scaling_factor': 1/9,
        'tta_level': 2,         # the level of test-time augmentation: 0=none, 1=mirror, 2=mirror+translate
    },
}

# As in the original: channels_last for the stored images and the network. (Checked on the CPU too: with oneDNN
# on a 2-core avx512 CPU, width 0.5, batch 512, a train step took ~1.4 s in channels_last vs ~2.2 s contiguous
# in fp32, ~0.9 s vs ~1.1 s under bf16 autocast.) batch_crop's output is contiguous, as in the original.
_MEMORY_FORMAT = torch.channels_last

#############################################
#                DataLoader                 #
#############################################

CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """airbench's CIFAR-10 normalisation: float images in [0, 1], [N, 3, H, W] -> (x - mean) / std, same shape and
    dtype. (The original uses torchvision's T.Normalize with these constants; same arithmetic.)"""
    mean = CIFAR_MEAN.to(images.dtype).view(-1, 1, 1)
    std = CIFAR_STD.to(images.dtype).view(-1, 1, 1)
    return (images - mean) / std


def batch_flip_lr(inputs: torch.Tensor) -> torch.Tensor:
    """Flips each image left-right with probability 0.5. inputs [N, C, H, W] float -> same shape and dtype."""
    flip_mask = (torch.rand(len(inputs), device=inputs.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)


def batch_crop(images: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Random translation: a random crop_size x crop_size window of each (padded) image, shifts uniform in
    [-r, r] per axis with r = (H - crop_size) // 2. images [N, 3, H, H] float -> [N, 3, crop_size, crop_size]."""
    r = (images.size(-1) - crop_size)//2
    shifts = torch.randint(-r, r+1, size=(len(images), 2), device=images.device)
    images_out = torch.empty((len(images), 3, crop_size, crop_size), device=images.device, dtype=images.dtype)
    # The two cropping methods in this if-else produce equivalent results, but the second is faster for r > 2.
    if r <= 2:
        for sy in range(-r, r+1):
            for sx in range(-r, r+1):
                mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
                images_out[mask] = images[mask, :, r+sy:r+sy+crop_size, r+sx:r+sx+crop_size]
    else:
        images_tmp = torch.empty((len(images), 3, crop_size, crop_size+2*r), device=images.device, dtype=images.dtype)
        for s in range(-r, r+1):
            mask = (shifts[:, 0] == s)
            images_tmp[mask] = images[mask, :, r+s:r+s+crop_size, :]
        for s in range(-r, r+1):
            mask = (shifts[:, 1] == s)
            images_out[mask] = images_tmp[mask, :, :, r+s:r+s+crop_size]
    return images_out


class CifarLoader:
    """airbench's in-memory loader, fed tensors instead of a path.

    images: uint8 [N, 3, 32, 32] (PORT: the original reads torchvision's uint8 [N, 32, 32, 3] and permutes);
    labels: int64 [N]. Iterating yields (inputs float32 [B, 3, 32, 32] normalised, labels int64 [B]).
    """

    def __init__(self, images, labels, train=True, batch_size=500, aug=None, drop_last=None, shuffle=None):
        # CPU: float32 instead of the original's .half() (channels_last kept).
        self.images = (images.float() / 255).contiguous(memory_format=_MEMORY_FORMAT)
        self.labels = labels.long()
        self.normalize = normalize
        self.proc_images = {}  # Saved results of image processing to be done on the first epoch
        self.epoch = 0

        self.aug = aug or {}
        for k in self.aug.keys():
            assert k in ['flip', 'translate'], f'Unrecognized key: {k}'

        self.batch_size = batch_size
        self.drop_last = train if drop_last is None else drop_last
        self.shuffle = train if shuffle is None else shuffle

    def __len__(self):
        return len(self.images)//self.batch_size if self.drop_last else ceil(len(self.images)/self.batch_size)

    def __iter__(self):

        if self.epoch == 0:
            # PORT: the original keeps every stage ('norm', 'flip', 'pad') in proc_images; only the last one is ever
            # read, so only that one is kept (saves ~1.2 GB of RAM in fp32; same images, same random draws).
            images = self.normalize(self.images)
            # Pre-flip images in order to do every-other epoch flipping scheme
            if self.aug.get('flip', False):
                images = batch_flip_lr(images)
            # Pre-pad images to save time when doing random translation
            pad = self.aug.get('translate', 0)
            if pad > 0:
                images = F.pad(images, (pad,)*4, 'reflect')
            key = 'pad' if pad > 0 else 'flip' if self.aug.get('flip', False) else 'norm'
            self.proc_images = {key: images}

        if self.aug.get('translate', 0) > 0:
            images = batch_crop(self.proc_images['pad'], self.images.shape[-2])
        elif self.aug.get('flip', False):
            images = self.proc_images['flip']
        else:
            images = self.proc_images['norm']
        # Flip all images together every other epoch. This increases diversity relative to random flipping
        if self.aug.get('flip', False):
            if self.epoch % 2 == 1:
                images = images.flip(-1)

        self.epoch += 1

        indices = (torch.randperm if self.shuffle else torch.arange)(len(images), device=images.device)
        for i in range(len(self)):
            idxs = indices[i*self.batch_size:(i+1)*self.batch_size]
            yield (images[idxs], self.labels[idxs])

#############################################
#            Network Components             #
#############################################


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class BatchNorm(nn.BatchNorm2d):
    """airbench BatchNorm: `momentum` in airbench's convention (weight of the old running stat; PyTorch gets
    1 - momentum), eps 1e-12, weight frozen at 1, bias trained."""

    def __init__(self, num_features, momentum, eps=1e-12,
                 weight=False, bias=True):
        super().__init__(num_features, eps=eps, momentum=1-momentum)
        self.weight.requires_grad = weight
        self.bias.requires_grad = bias
        # Note that PyTorch already initializes the weights to one and bias to zero


class Conv(nn.Conv2d):
    """Conv2d with PyTorch's default init, then identity (dirac) on the first in_channels filters; bias zero."""

    def __init__(self, in_channels, out_channels, kernel_size=3, padding='same', bias=False):
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[:w.size(1)])


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU. [B, Cin, H, W] -> [B, Cout, H//2, W//2]."""

    def __init__(self, channels_in, channels_out, batchnorm_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in,  channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, batchnorm_momentum)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, batchnorm_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(x)
        x = self.norm1(x)
        x = self.activ(x)
        x = self.conv2(x)
        x = self.norm2(x)
        x = self.activ(x)
        return x

#############################################
#            Network Definition             #
#############################################


def scaled_widths(width_mult: float = 1.0) -> dict[str, int]:
    """airbench's block widths (64/256/256) times width_mult, rounded, at least 1 channel each."""
    return {k: max(1, int(round(v * width_mult))) for k, v in hyp['net']['widths'].items()}


def make_net(width_mult: float = 1.0) -> nn.Sequential:
    """The airbench94 network in fp32 on the CPU: float [B, 3, 32, 32] normalised images -> float logits [B, 10].

    CPU: the original ends with net.half().cuda(), channels_last, and BatchNorm modules back to float; here every
    tensor stays float32 on the CPU, channels_last kept (bf16 compute, when asked for, comes from autocast in
    train_reference).
    PORT: width_mult scales the three block widths (1.0 = the recipe)."""
    widths = scaled_widths(width_mult)
    batchnorm_momentum = hyp['net']['batchnorm_momentum']
    whiten_kernel_size = 2
    whiten_width = 2 * 3 * whiten_kernel_size**2
    net = nn.Sequential(
        Conv(3, whiten_width, whiten_kernel_size, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(whiten_width,     widths['block1'], batchnorm_momentum),
        ConvGroup(widths['block1'], widths['block2'], batchnorm_momentum),
        ConvGroup(widths['block2'], widths['block3'], batchnorm_momentum),
        nn.MaxPool2d(3),
        Flatten(),
        nn.Linear(widths['block3'], 10, bias=False),
        Mul(hyp['net']['scaling_factor']),
    )
    net[0].weight.requires_grad = False
    net = net.to(memory_format=_MEMORY_FORMAT)
    return net

#############################################
#       Whitening Conv Initialization       #
#############################################


def get_patches(x: torch.Tensor, patch_shape) -> torch.Tensor:
    """All stride-1 patches: x float [N, C, H, W] -> float32 [N * (H-h+1) * (W-w+1), C, h, w]."""
    c, (h, w) = x.shape[1], patch_shape
    return x.unfold(2,h,1).unfold(3,w,1).transpose(1,3).reshape(-1,c,h,w).float()


def get_whitening_parameters(patches: torch.Tensor):
    """patches float32 [n, c, h, w] -> (eigenvalues [c*h*w, 1, 1, 1], eigenvectors [c*h*w, c, h, w]) of the
    uncentred patch covariance, largest first."""
    n,c,h,w = patches.shape
    patches_flat = patches.view(n, -1)
    est_patch_covariance = (patches_flat.T @ patches_flat) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(est_patch_covariance, UPLO='U')
    return eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c*h*w,c,h,w).flip(0)


def init_whitening_conv(layer: nn.Conv2d, train_set: torch.Tensor, eps: float = 5e-4) -> None:
    """Sets layer.weight [2*c*h*w, c, h, w] to the +/- eigenvectors scaled by 1/sqrt(eigenvalue + eps) of the
    patches of train_set (float [N, 3, 32, 32], normalised)."""
    patches = get_patches(train_set, patch_shape=layer.weight.data.shape[2:])
    eigenvalues, eigenvectors = get_whitening_parameters(patches)
    eigenvectors_scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((eigenvectors_scaled, -eigenvectors_scaled))

############################################
#                Lookahead                 #
############################################


class LookaheadState:
    """EMA of every float tensor of the state dict (parameters and BN running stats), copied back into the net."""

    def __init__(self, net):
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1-decay)
                net_param.copy_(ema_param)

############################################
#               Evaluation                 #
############################################


def _autocast(bf16: bool):
    # CPU: bf16 autocast stands in for the original's fp16 network; disabled (fp32) by default.
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def infer(model, loader, tta_level=0, bf16=False) -> torch.Tensor:
    """Logits for all of loader's images: float32 [N, 10], in chunks of 2000 images.

    tta_level 0: plain; 1: mean of the image and its mirror; 2: 0.5 * level 1 + 0.25 * level 1 on the image
    translated one pixel up-left + 0.25 * on it translated down-right (reflect padding)."""

    # Test-time augmentation strategy (for tta_level=2):
    # 1. Flip/mirror the image left-to-right (50% of the time).
    # 2. Translate the image by one pixel either up-and-left or down-and-right (50% of the time,
    #    i.e. both happen 25% of the time).
    #
    # This creates 6 views per image (left/right times the two translations and no-translation),
    # which we evaluate and then weight according to the given probabilities.

    def net(inputs):
        with _autocast(bf16):
            return model(inputs).float()

    def infer_basic(inputs, net):
        return net(inputs).clone()

    def infer_mirror(inputs, net):
        return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

    def infer_mirror_translate(inputs, net):
        logits = infer_mirror(inputs, net)
        pad = 1
        padded_inputs = F.pad(inputs, (pad,)*4, 'reflect')
        inputs_translate_list = [
            padded_inputs[:, :, 0:32, 0:32],
            padded_inputs[:, :, 2:34, 2:34],
        ]
        logits_translate_list = [infer_mirror(inputs_translate, net)
                                 for inputs_translate in inputs_translate_list]
        logits_translate = torch.stack(logits_translate_list).mean(0)
        return 0.5 * logits + 0.5 * logits_translate

    model.eval()
    test_images = loader.normalize(loader.images)
    infer_fn = [infer_basic, infer_mirror, infer_mirror_translate][tta_level]
    with torch.no_grad():
        return torch.cat([infer_fn(inputs, net) for inputs in test_images.split(2000)])


def evaluate(model, loader, tta_level=0, bf16=False) -> float:
    """Accuracy on loader's images, a fraction in [0, 1]."""
    logits = infer(model, loader, tta_level, bf16)
    return (logits.argmax(1) == loader.labels).float().mean().item()

############################################
#                Training                  #
############################################


def cpu_has_avx512_bf16() -> bool:
    """Whether /proc/cpuinfo lists the avx512_bf16 flag (False where it cannot be read)."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def train_reference(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    epochs: float = hyp['opt']['train_epochs'], width_mult: float = 1.0, *, seed: int = 0,
                    bf16: bool = False, batch_size: int = hyp['opt']['batch_size'], log=print) -> dict:
    """One airbench94 run (the original's main(run)) on the given tensors; returns the result dict.

    train_x uint8 [N, 3, 32, 32], train_y int64 [N] in 0..9 (N >= batch_size); test_x uint8 [M, 3, 32, 32],
    test_y int64 [M]. epochs may be fractional (ceil(steps_per_epoch * epochs) optimiser steps, steps_per_epoch =
    N // batch_size). log: called with one str per epoch and at the end (None: silent).

    Returns {epochs, width_mult, widths, seed, bf16, batch_size, n_train, n_test, total_train_steps,
    lookahead_updates, test_accuracy, test_accuracy_tta (fractions in [0, 1]), train_seconds (whitening init +
    training loops, wall-clock s), tta_seconds, total_time_seconds (train + TTA eval, airbench's total), per_epoch:
    [{epoch (1-based), steps (cumulative), lr_factor (last one used), train_loss (last batch, per example),
    train_acc (last batch), test_accuracy (no TTA), seconds (training time of that epoch)}]}.
    """
    say = log or (lambda s: None)
    assert train_x.dtype == torch.uint8 and train_x.shape[1:] == (3, 32, 32), (train_x.dtype, train_x.shape)
    assert test_x.dtype == torch.uint8 and test_x.shape[1:] == (3, 32, 32), (test_x.dtype, test_x.shape)
    if len(train_x) < batch_size:
        raise ValueError(f"{len(train_x)} training images is less than one batch ({batch_size}); "
                         "the loader drops the last partial batch, so no step would be taken")
    torch.manual_seed(seed)  # PORT: the original is unseeded

    momentum = hyp['opt']['momentum']
    # Assuming gradients are constant in time, for Nesterov momentum, the below ratio is how much
    # larger the default steps will be than the underlying per-example gradients. We divide the
    # learning rate by this ratio in order to ensure steps are the same scale as gradients, regardless
    # of the choice of momentum.
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = hyp['opt']['lr'] / kilostep_scale  # un-decoupled learning rate for PyTorch SGD
    wd = hyp['opt']['weight_decay'] * batch_size / kilostep_scale
    lr_biases = lr * hyp['opt']['bias_scaler']

    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp['opt']['label_smoothing'], reduction='none')
    test_loader = CifarLoader(test_x, test_y, train=False, batch_size=2000)
    train_loader = CifarLoader(train_x, train_y, train=True, batch_size=batch_size, aug=hyp['aug'])
    total_train_steps = ceil(len(train_loader) * epochs)

    model = make_net(width_mult)
    current_steps = 0

    norm_biases = [p for k, p in model.named_parameters() if 'norm' in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if 'norm' not in k and p.requires_grad]
    param_configs = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd/lr_biases),
                     dict(params=other_params, lr=lr, weight_decay=wd/lr)]
    optimizer = torch.optim.SGD(param_configs, momentum=momentum, nesterov=True)

    def get_lr(step):
        warmup_steps = int(total_train_steps * 0.23)
        warmdown_steps = total_train_steps - warmup_steps
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        else:
            frac = (step - warmup_steps) / warmdown_steps
            return 1.0 * (1 - frac) + 0.07 * frac
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)

    alpha_schedule = 0.95**5 * (torch.arange(total_train_steps+1) / total_train_steps)**3
    # As in the original, the EMA is cloned before the whitening init below (its first update mixes in the
    # pre-init whitening weights with weight alpha_schedule[5], ~1e-6 at full length).
    lookahead_state = LookaheadState(model)
    lookahead_updates = 0

    # CPU: perf_counter instead of CUDA events.
    total_time_seconds = 0.0

    # Initialize the whitening layer using training images
    start = time.perf_counter()
    train_images = train_loader.normalize(train_loader.images[:5000])
    init_whitening_conv(model[0], train_images)
    del train_images
    total_time_seconds += time.perf_counter() - start

    per_epoch = []
    n_epochs = ceil(epochs)
    for epoch in range(n_epochs):

        model[0].bias.requires_grad = (epoch < hyp['opt']['whiten_bias_epochs'])

        ####################
        #     Training     #
        ####################

        start = time.perf_counter()

        model.train()
        for inputs, labels in train_loader:

            with _autocast(bf16):
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), labels).sum()  # CPU: loss on fp32 logits
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr_factor = get_lr(current_steps)  # PORT: the factor this step uses, recorded for the log only
            optimizer.step()
            scheduler.step()

            current_steps += 1

            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
                lookahead_updates += 1

            if current_steps >= total_train_steps:
                if lookahead_state is not None:
                    lookahead_state.update(model, decay=1.0)
                    lookahead_updates += 1
                break

        seconds = time.perf_counter() - start
        total_time_seconds += seconds

        ####################
        #    Evaluation    #
        ####################

        # Save the accuracy and loss from the last training batch of the epoch
        train_acc = (outputs.detach().argmax(1) == labels).float().mean().item()
        train_loss = loss.item() / batch_size
        val_acc = evaluate(model, test_loader, tta_level=0, bf16=bf16)
        per_epoch.append(dict(epoch=epoch + 1, steps=current_steps, lr_factor=lr_factor, train_loss=train_loss,
                              train_acc=train_acc, test_accuracy=val_acc, seconds=seconds))
        say(f"epoch {epoch + 1:2d}/{n_epochs}  steps {current_steps:4d}  train_loss {train_loss:.4f}  "
            f"train_acc {train_acc:.4f}  test_acc {val_acc:.4f}  seconds {seconds:.1f}")

    ####################
    #  TTA Evaluation  #
    ####################

    start = time.perf_counter()
    tta_val_acc = evaluate(model, test_loader, tta_level=hyp['net']['tta_level'], bf16=bf16)
    tta_seconds = time.perf_counter() - start
    train_seconds = total_time_seconds
    total_time_seconds += tta_seconds

    return dict(epochs=epochs, width_mult=width_mult, widths=scaled_widths(width_mult), seed=seed, bf16=bf16,
                batch_size=batch_size, n_train=len(train_x), n_test=len(test_x), total_train_steps=total_train_steps,
                lookahead_updates=lookahead_updates, test_accuracy=per_epoch[-1]['test_accuracy'],
                test_accuracy_tta=tta_val_acc, train_seconds=train_seconds, tta_seconds=tta_seconds,
                total_time_seconds=total_time_seconds, per_epoch=per_epoch)

############################################
#                 Command line             #
############################################


def harness_run(args) -> dict:
    """The same run through this project's harness (trial.train via experiments.results.retrain, protocol
    train_val: all 50,000 training images, the last weights scored on the test split with the config's TTA)."""
    import tempfile

    from experiments.results.retrain import retrain
    from trial import REPO
    from trial.config import load_params_file
    params = {**load_params_file(str(REPO / "baselines" / "airbench_cifar10.json")), "width_mult": args.width_mult,
              "amp": args.bf16, "batch_size": args.batch_size}
    if args.subset:
        params["train_subset"] = args.subset
    with tempfile.TemporaryDirectory() as out:
        run = retrain(params, [args.seed], out, "train_val", epochs=round(args.epochs), data_dir=args.data_dir,
                      progress=False, extra={"threads": torch.get_num_threads()})[0]
    return {"test_accuracy_tta": run["test"]["accuracy"], "train_seconds": run["final"]["train_seconds"],
            "config": run["config"], "per_epoch": run["final"].get("epochs_run")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m experiments.studies.airbench_reference",
                                description="airbench94 (CIFAR-10) reference run on the CPU; see the module docstring.")
    p.add_argument("--epochs", type=float, default=hyp['opt']['train_epochs'], help="training epochs (default 9.9)")
    p.add_argument("--width-mult", type=float, default=1.0, help="scales the 64/256/256 widths (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (pays only with avx512_bf16/AMX)")
    p.add_argument("--subset", type=int, default=0, help="train on the first N training images (smoke runs)")
    p.add_argument("--batch-size", type=int, default=hyp['opt']['batch_size'], help="recipe: 1024")
    p.add_argument("--data-dir", default=None, help="where CIFAR10/ is (default: where trial.data looks)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result here")
    p.add_argument("--compare", action="store_true",
                   help="then train baselines/airbench_cifar10.json with this project's harness on the same data "
                        "(train + validation = the 50,000 training images, scored on the test split), epochs, "
                        "width, seed, threads and precision, and print both")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    has_bf16 = cpu_has_avx512_bf16()
    if args.bf16 and not has_bf16:
        print("warning: --bf16 on a CPU without avx512_bf16: bfloat16 will be emulated and slow", file=sys.stderr)

    from trial import data  # the project's loader, for the raw uint8 tensors only
    s = data.load("cifar10", args.data_dir)
    train_x, train_y = s.train_x, s.train_y
    if args.subset:
        train_x, train_y = train_x[:args.subset], train_y[:args.subset]
    print(f"airbench94 reference ({SOURCE_REPO} {SOURCE_PATH} @ {SOURCE_COMMIT[:12]}): train {len(train_x)}, "
          f"test {len(s.test_x)}, epochs {args.epochs:g}, width_mult {args.width_mult:g}, "
          f"widths {scaled_widths(args.width_mult)}, seed {args.seed}, threads {torch.get_num_threads()}, "
          f"{'bf16 autocast' if args.bf16 else 'fp32'}", flush=True)

    result = train_reference(train_x, train_y, s.test_x, s.test_y, args.epochs, args.width_mult, seed=args.seed,
                             bf16=args.bf16, batch_size=args.batch_size, log=lambda line: print(line, flush=True))
    result.update(threads=torch.get_num_threads(), cpu_avx512_bf16=has_bf16, source_repo=SOURCE_REPO,
                  source_path=SOURCE_PATH, source_commit=SOURCE_COMMIT, torch_version=torch.__version__)

    print(f"test accuracy {result['test_accuracy']:.4f}  with TTA {result['test_accuracy_tta']:.4f}  "
          f"train seconds {result['train_seconds']:.1f}  (TTA eval {result['tta_seconds']:.1f})  "
          f"cpu avx512_bf16 {has_bf16}")
    if args.compare:
        result["harness"] = harness_run(args)
        h = result["harness"]
        print(f"harness (baselines/airbench_cifar10.json): test accuracy with TTA {h['test_accuracy_tta']:.4f}, "
              f"train seconds {h['train_seconds']:.1f}; reference {result['test_accuracy_tta']:.4f}: difference "
              f"{h['test_accuracy_tta'] - result['test_accuracy_tta']:+.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
