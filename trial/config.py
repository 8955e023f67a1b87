"""The trial configuration: one frozen dataclass of defaults, and the rules that turn parameters into it.

Precedence, lowest first: the defaults below < a params file (a baseline) < the parameters NNI sampled < command-line
flags. Every source goes through `resolve`, which rejects unknown keys and wrong values with one line that names the
key and what it accepts. NNI's nested choices are flattened here too: under a config key the `_name` is that key's value
(`"optimizer": {"_name": "sgd", "learning_rate": 0.05}`), under any other key it only labels the branch. The one
mapping-valued key, `nas_arch` (an architecture of the `nas` family), is kept whole; given as a path, the file's
architecture is read in, so a resolved config (and its config.json) always carries the architecture itself.

The accepted names of datasets, activations, pools, heads, optimizers, schedules, losses and shortcuts are the keys of
the name -> builder tables of trial/data.py, model.py, optim.py and networks.py (downsampling modes: networks.py's
DOWNSAMPLES): one source each.

    >>> resolve({"dataset": "fmnist", "filters": 64}).filters
    64
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .augment import AUGMENTATIONS, CROP_PAD
from .data import INFO, DatasetError
from .data import info as dataset_info
from .files import FileFormatError, closest, read_data
from .folder import AUTO_SIDE, FolderOptions
from .images import RESIZE_MODES
from .inference import TTA
from .model import ACTIVATIONS, FAMILIES, HEADS, POOLS, plain_sides
from .nas_space import ArchError, check_arch
from .networks import DOWNSAMPLES, SHORTCUTS, airbench_max_groups, residual_max_stages
from .optim import LOSSES, OPTIMIZERS, SCHEDULES

KEEP = ("best", "last")
METRICS = ("accuracy", "balanced_accuracy")   # validation scores a trial can report as `default` (trial/train.py)
MAX_BLOCKS = 6
# A tiny run for CI and a first try: `python -m trial --smoke`, `experiments.report --smoke`.
SMOKE = {"train_subset": 512, "val_size": 256, "epochs": 1}


class ConfigError(ValueError):
    """A parameter that is unknown or has a value the harness cannot use; the message says which and why."""


@dataclass(frozen=True)
class TrialConfig:
    # data
    dataset: str = "fmnist"           # a key of trial.data.INFO, or the path of an image folder, a CSV manifest or
                                      # an .npz (trial/folder.py; kept absolute)
    val_size: int = 5000              # images carved from the training split for validation (seeded by split_seed)
    split_seed: int = 0               # fixed across seeds so every run is validated on the same images
    train_subset: int = 0             # train on only this many images (0 = all); for smoke runs and tests
    # datasets given by path only (trial/folder.py; `python -m trial.data PATH` audits one)
    image_size: int = 0               # side images are resized to once, pixels (0 = the median shorter side clamped
                                      # to 16..128, a multiple of 4, said in one line)
    resize_mode: str = "crop"         # "crop" (shorter side to image_size, centre crop) or "pad" (longer side, the
                                      # rest padded with the background, white): the aspect ratio is kept either way
    test_fraction: float = 0.2        # without a given test split: share held out as test (stratified, fixed seed,
                                      # the list written beside the cache and reused by every run)
    mirror_safe: bool = False         # a horizontal mirror keeps every image's class: allows flip augmentation and
                                      # mirror test-time augmentation
    skip_bad_images: bool = False     # train without files that do not decode (counted in final.json), not refuse
    drop_duplicates: bool = False     # keep one copy of exact-duplicate images (the one in test, then val) instead
                                      # of refusing the same image in two splits
    augment: bool = False             # batched shift/rotate/zoom (28x28) or crop/flip (CIFAR-10) on the device
    augmentation: str = "dataset"     # with augment: a key of trial.augment.AUGMENTATIONS ("affine" shift/rotate/
                                      # zoom, "crop_flip", "crop" without the flip), or "dataset": the dataset's own
                                      # kind (affine for the 28x28 sets, crop_flip for CIFAR-10)
    crop_pad: int = CROP_PAD          # crop/flip: reflect padding before the random crop, pixels (max translation)
    cutout: int = 0                   # side of a square set to 0 (the mean) at a random place per training image,
                                      # pixels (0 = off; DeVries & Taylor 2017, "Improved Regularization ... Cutout")
                                      # crop_pad and cutout: pixels of a 32x32 image; a dataset given by path gets
                                      # them scaled to its side (trial.augment.scaled_pixels)
    # architecture
    family: str = "plain"             # a key of trial.model.FAMILIES: "plain" stack, "residual" (He et al. 2016),
                                      # "airbench" (whitening stem, conv-pool-norm-activation groups; airbench94),
                                      # "nas" (the cells nas_arch chooses; trial/nas_space.py), "resnet18"
                                      # (torchvision's, fixed: the hand design for a user's own images)
    nas_arch: dict | None = None   # nas: labels -> chosen candidates (trial/nas_space.py), or in a params file or
                                      # flag the path of a JSON file holding them (an architecture search's output)
    nas_cell_gate: bool = False       # nas: each cell's output x + g * cell(x), g a learnable scalar per cell from 0
                                      # (ReZero, Bachlechner et al. 2020); the one-shot search's supernet needs it
    width_mult: float = 1.0           # every family: channel counts times this (rounded, at least 1)
    conv_layers: int = 2              # plain: conv blocks, each followed by pooling while the map is larger than 1x1;
                                      # residual: stages (each after the first halves the map); airbench: groups
    filters: int = 32                 # channels of every block (stage, group), unless filters_<i> sets block i
    kernel: int = 3                   # kernel size of every block, unless kernel_<i> sets block i
    filters_1: int = 0                # per-block overrides (0 = use `filters` / `kernel`)
    filters_2: int = 0
    filters_3: int = 0
    filters_4: int = 0
    filters_5: int = 0
    filters_6: int = 0
    kernel_1: int = 0
    kernel_2: int = 0
    kernel_3: int = 0
    kernel_4: int = 0
    kernel_5: int = 0
    kernel_6: int = 0
    blocks: int = 2                   # residual: basic blocks per stage, unless blocks_<i> sets stage i
    blocks_1: int = 0                 # per-stage overrides (0 = use `blocks`)
    blocks_2: int = 0
    blocks_3: int = 0
    blocks_4: int = 0
    blocks_5: int = 0
    blocks_6: int = 0
    stem_width: int = 0               # residual: channels of the stem conv (0 = the first stage's)
    downsample: str = "stride"        # residual: "stride" (strided first conv of a stage) or "pool" (2x2 max pool)
    shortcut: str = "projection"      # residual: "projection" (1x1 conv + BN where the shape changes, option B) or
                                      # "identity" (subsample and zero-pad, option A; widths must not shrink)
    whiten_bias_epochs: int = 3       # airbench: epochs the whitening stem's bias trains before it is frozen
    convs_per_block: int = 1          # plain: 2 makes VGG-style blocks (conv-conv-pool)
    batch_norm: bool = False
    activation: str = "relu"          # a key of trial.model.ACTIVATIONS
    pool: str = "max"                 # a key of trial.model.POOLS
    conv_dropout: float = 0.0         # dropout after each conv block
    head: str = "flatten"             # a key of trial.model.HEADS: flatten the last map, or global average pool
    dense_units: int = 128            # hidden units before the output layer (0 = none)
    dropout: float = 0.5              # dropout before the output layer
    # optimisation
    optimizer: str = "adam"           # a key of trial.optim.OPTIMIZERS
    learning_rate: float = 1e-3       # peak learning rate
    momentum: float = 0.9             # sgd only (Nesterov momentum whenever it is above 0)
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False  # sgd: weights shrink by weight_decay x (lr / learning_rate) per step, not
                                      # by weight_decay x lr: decay independent of the peak lr (Loshchilov & Hutter
                                      # 2019; airbench94's SGD); adamw is decoupled already
    norm_bias_lr_scale: float = 1.0   # BatchNorm biases learn at this times the learning rate (airbench94: 64)
    batch_size: int = 128
    epochs: int = 10                  # the budget; NNI's Hyperband sets it through TRIAL_BUDGET
    loss: str = "cross_entropy"       # a key of trial.optim.LOSSES ("mse": on one-hot targets, softmax outputs)
    label_smoothing: float = 0.0      # cross_entropy only
    lr_schedule: str = "plateau"      # a key of trial.optim.SCHEDULES
    lr_patience: int = 2              # plateau: epochs without improvement before the lr is cut
    lr_factor: float = 0.5            # plateau: the cut
    warmup_fraction: float = 0.23     # warmup_linear: fraction of the steps over which the lr rises to its peak
    lr_start_factor: float = 0.2      # warmup_linear: the lr at the first step, as a fraction of the peak
    lr_end_factor: float = 0.07       # warmup_linear: the lr at the last step, as a fraction of the peak
    ema_decay: float = 0.0            # exponential moving average of the weights (and BN statistics) per step, used
                                      # for validation, test and the saved model (0 = off; e.g. 0.99)
    lookahead: bool = False           # with ema_decay: airbench94's lookahead instead (every 5 steps the weights move
                                      # to their average, whose decay grows as (step / total)^3; trial/averaging.py)
    tta: str = "none"                 # test-time augmentation of validation and test: "mirror" (average with the
                                      # flipped image), "mirror_translate" (airbench94's level 2), "translate" (level
                                      # 2 without the mirror: for digits and text), "none"
    patience: int = 0                 # early stopping: epochs without improvement (0 = off); best weights restored
    keep: str = "best"                # weights at the end: "best" validation epoch, or "last" (training on train+val)
    val_every_epoch: bool = True      # score validation after every epoch (the tuner's per-epoch metric, early
                                      # stopping, keep "best", the plateau schedule); off: once, after the last epoch
                                      # (retraining on train + validation, where the per-epoch number scores training
                                      # images and its test-time augmentation costs up to a sixth of an epoch)
    metric: str = "accuracy"          # what validation reports as `default` (the tuner's number), keeps "best"
                                      # weights and early-stops by: "accuracy", or "balanced_accuracy" (the mean
                                      # recall over classes: for imbalanced data, trial/folder.py's IMBALANCE_FLAG)
    seed: int = 0
    # run
    device: str = "auto"              # "auto" (cuda if present), "cpu", "cuda", "cuda:1"
    threads: int = 0                  # CPU threads for torch (0 = torch's default); cores / trialConcurrency under NNI
    amp: bool = True                  # bfloat16 autocast where the hardware has it (CUDA, AVX512-BF16/AMX CPUs)
    compile: bool = False             # torch.compile the model: pays off on long GPU runs, costs tens of seconds first
    eval_test: bool = True            # evaluate the best-validation weights on the test split at the end
    # limits: a network that breaks one is refused before its first training step, in one line (trial/cost.py);
    # under NNI the trial reports `default` 0.0 (ranked last) with the measured figures and ends
    max_params: int = 0               # most parameters (0 = no limit)
    max_macs: int = 0                 # most multiply-adds of one batch-1 forward pass (0 = no limit)
    max_latency_ms: float = 0.0       # most CPU milliseconds of a batch-1 forward pass, float32, with `threads`
                                      # threads (0 = no limit); measured on the machine the trial runs on

    def channels(self) -> list[int]:
        return [getattr(self, f"filters_{i}") or self.filters for i in range(1, self.conv_layers + 1)]

    def kernels(self) -> list[int]:
        return [getattr(self, f"kernel_{i}") or self.kernel for i in range(1, self.conv_layers + 1)]

    def depths(self) -> list[int]:
        return [getattr(self, f"blocks_{i}") or self.blocks for i in range(1, self.conv_layers + 1)]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, default in LATE_KEYS.items():
            if out[key] == default:
                # only where set: every other config keeps the dict, digest, resume key and config.json it had
                # before the key existed
                del out[key]
        return out

    def digest(self) -> str:
        """A stable hash of every field: the identity of a run (config + seed)."""
        return params_digest(self.to_dict())


# keys added after runs were saved, written by to_dict only where they differ from these defaults
LATE_KEYS = {"nas_arch": None, "val_every_epoch": True, "nas_cell_gate": False, "metric": "accuracy",
             "max_params": 0, "max_macs": 0, "max_latency_ms": 0.0,
             **{f.name: f.default for f in fields(FolderOptions)}}

CHOICES = {"dataset": INFO, "family": FAMILIES, "activation": ACTIVATIONS, "pool": POOLS, "head": HEADS,
           "optimizer": OPTIMIZERS, "loss": LOSSES, "lr_schedule": SCHEDULES, "keep": KEEP, "downsample": DOWNSAMPLES,
           "shortcut": SHORTCUTS, "tta": TTA, "resize_mode": RESIZE_MODES,
           "augmentation": ("dataset", *AUGMENTATIONS), "metric": METRICS}
# (low, high) inclusive bounds; None = unbounded on that side.
_RANGES = {"val_size": (1, None), "train_subset": (0, None), "conv_layers": (1, MAX_BLOCKS),
           "filters": (1, 4096), "kernel": (1, 11), "convs_per_block": (1, 4), "conv_dropout": (0.0, 0.95),
           "dense_units": (0, 1 << 16), "dropout": (0.0, 0.95), "learning_rate": (1e-8, 10.0),
           "momentum": (0.0, 0.999), "weight_decay": (0.0, 1.0), "batch_size": (1, 1 << 16), "epochs": (1, 10000),
           "label_smoothing": (0.0, 0.5), "lr_patience": (0, None), "lr_factor": (0.01, 1.0), "patience": (0, None),
           "threads": (0, 1024), "crop_pad": (0, 16), "cutout": (0, 64), "width_mult": (0.05, 16.0),
           "blocks": (1, 16), "stem_width": (0, 4096), "whiten_bias_epochs": (0, 10000),
           "norm_bias_lr_scale": (0.001, 1000.0), "warmup_fraction": (0.0, 1.0), "lr_start_factor": (0.0, 1.0),
           "lr_end_factor": (0.0, 1.0), "ema_decay": (0.0, 0.99999),
           "image_size": (0, 1024), "test_fraction": (0.05, 0.5),
           "max_params": (0, None), "max_macs": (0, None), "max_latency_ms": (0.0, None)}
for _i in range(1, MAX_BLOCKS + 1):
    _RANGES[f"filters_{_i}"] = (0, 4096)
    _RANGES[f"kernel_{_i}"] = (0, 11)
    _RANGES[f"blocks_{_i}"] = (0, 16)
# Spellings that NNI search spaces and the studies this project grew from use.
ALIASES = {"TRIAL_BUDGET": "epochs", "lr": "learning_rate", "num_filters": "filters", "kernel_size": "kernel",
           "dropout_rate": "dropout", "hidden_units": "dense_units", "bn": "batch_norm"}

FIELDS = {f.name: f for f in fields(TrialConfig)}
MAPPING_KEYS = ("nas_arch",)    # config keys whose value is a mapping itself, never a nested choice
_TYPES = typing.get_type_hints(TrialConfig)


def flatten_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hoist NNI nested choices into one flat dict: {"arch": {"_name": "x", "filters_1": 32}} -> {"filters_1": 32}."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and "_type" in value and "_value" in value:
            # NNI 3.0 sends the unsampled branch of a choice one of whose options lacks a '_name' (field case c12)
            raise ConfigError(f"NNI passed an unsampled search-space entry for {key!r} ({dict(value)}): every option "
                              f"of a nested choice needs a '_name' (python -m experiments.check refuses such a space "
                              f"before it starts)")
        if isinstance(value, Mapping) and key not in MAPPING_KEYS:
            # a nested choice under a config key ("optimizer": {"_name": "sgd", "momentum": ...}) sets that key
            if "_name" in value and ALIASES.get(key, key) in FIELDS:
                flat[key] = value["_name"]
            inner = {k: v for k, v in value.items() if k != "_name"}
            for k, v in flatten_params(inner).items():
                if k in flat:
                    raise ConfigError(f"parameter {k!r} is set twice (inside nested choice {key!r}); keep one")
                flat[k] = v
        else:
            if key in flat:
                raise ConfigError(f"parameter {key!r} is set twice; keep one")
            flat[key] = value
    return flat


def _coerce(key: str, value: Any) -> Any:
    if key == "nas_arch":
        return _architecture(value)
    if value is None and key in ("max_params", "max_macs", "max_latency_ms"):
        return FIELDS[key].default   # a limit given as null (JSON null, YAML ~): no limit, as 0 says
    kind = _TYPES[key]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"parameter {key!r} must be true or false, got {value!r}")
    if kind is int:
        # NNI's quniform/qloguniform return floats such as 64.0: accept them when they are whole numbers.
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"parameter {key!r} must be an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"parameter {key!r} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"parameter {key!r} must be an integer, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"parameter {key!r} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {key!r} must be a number, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"parameter {key!r} must be a finite number, got {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"parameter {key!r} must be a string, got {value!r}")
    if key == "dataset" and value not in INFO and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())   # a path: the same files from any working directory
    return value


def _architecture(value: Any) -> dict | None:
    """nas_arch as given (a mapping, or the path of a JSON file that holds one) -> its canonical dict."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = load_arch_file(value)["nas_arch"]
        except OSError as err:
            raise ConfigError(f"parameter 'nas_arch': cannot read architecture file {value!r}: "
                              f"{err.strerror or err}") from None
    try:
        return check_arch(value)
    except ArchError as err:
        raise ConfigError(f"parameter 'nas_arch': {err}") from None


def _check(key: str, value: Any) -> None:
    if key == "dataset" and value not in INFO:
        if Path(value).expanduser().exists():
            return   # a dataset given by path: its files are checked (audited) when it is loaded
        raise ConfigError(f"parameter 'dataset' has value {value!r}: neither a dataset name (valid values: "
                          f"{', '.join(INFO)}) nor an existing path (an image folder, a CSV manifest or an .npz)")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"parameter {key!r} has value {value!r}{closest(value, CHOICES[key])}; valid values: "
                          f"{', '.join(CHOICES[key])}")
    if key in _RANGES:
        low, high = _RANGES[key]
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{low}, {'inf' if high is None else high}]"
            raise ConfigError(f"parameter {key!r} = {value!r} is outside {bounds}")


def normalize(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten, rename aliases, reject unknown keys, coerce types and check ranges; returns only the given keys."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in flatten_params(params).items():
        name = ALIASES.get(key, key)
        if name not in FIELDS:
            raise ConfigError(f"unknown parameter {key!r}{closest(key, [*FIELDS, *ALIASES])}; valid parameters: "
                              f"{', '.join(FIELDS)}")
        if name in given:   # e.g. TRIAL_BUDGET beside epochs: which one was meant?
            raise ConfigError(f"parameters {given[name]!r} and {key!r} both set {name!r}; keep one")
        given[name] = key
        value = _coerce(name, value)
        _check(name, value)
        out[name] = value
    return out


def resolve(*layers: Mapping[str, Any] | None) -> TrialConfig:
    """Merge parameter layers (later wins) over the defaults into a checked TrialConfig. Raises ConfigError (one line
    naming the key and what it accepts) for an unknown key, a wrong type, a value out of range or an inconsistent
    combination."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(normalize(layer))
    config = TrialConfig(**merged)
    for i in range(config.conv_layers + 1, MAX_BLOCKS + 1):
        if getattr(config, f"filters_{i}") or getattr(config, f"kernel_{i}") or getattr(config, f"blocks_{i}"):
            raise ConfigError(f"filters_{i}/kernel_{i}/blocks_{i} set but conv_layers is {config.conv_layers}; "
                              f"raise conv_layers or drop the per-block setting")
    if config.family == "residual" and config.shortcut == "identity":
        widths = [config.stem_width or config.channels()[0]] + config.channels()
        if any(b < a for a, b in zip(widths, widths[1:])):
            raise ConfigError(f"shortcut 'identity' (zero-padding, option A) cannot shrink channels, widths are "
                              f"{widths}; use shortcut 'projection' or non-decreasing widths")
    if (config.family == "nas") != (config.nas_arch is not None):
        raise ConfigError("family 'nas' takes its network from nas_arch: give both (`python -m trial --arch FILE` "
                          "sets them), or neither" if config.family == "nas" else
                          f"nas_arch shapes family 'nas' only; family {config.family!r} would ignore it: drop it or "
                          f"use family 'nas'")
    if config.nas_cell_gate and config.family != "nas":
        raise ConfigError(f"nas_cell_gate gates the cells of family 'nas' only; family {config.family!r} would "
                          f"ignore it: drop it or use family 'nas'")
    _check_family_keys(config, merged)
    _check_dataset_keys(config, merged)
    if not (INFO[config.dataset].mirror_safe if config.dataset in INFO else config.mirror_safe):
        mirrored = [f"tta {config.tta!r}"] if config.tta.startswith("mirror") else []
        if config.augment and config.augmentation == "crop_flip":
            mirrored.append(f"augmentation {config.augmentation!r}")
        if mirrored:
            raise ConfigError(f"{' and '.join(mirrored)} mirror(s) images, which changes {config.dataset}'s classes "
                              f"{'(a mirrored digit is another digit or none)' if config.dataset in INFO else '(mirror_safe is false; set it true if a mirror keeps every class)'}; use tta 'none' and augmentation "
                              f"'dataset', 'affine' or 'crop'")
    _check_stages(config)
    _check_maps(config)
    if config.lookahead and not config.ema_decay:
        raise ConfigError("lookahead averages with ema_decay per step: set ema_decay (airbench94: 0.95) or turn "
                          "lookahead off")
    if config.decoupled_weight_decay and config.optimizer != "sgd":
        raise ConfigError(f"decoupled_weight_decay applies to optimizer 'sgd' (adamw is decoupled already), not "
                          f"{config.optimizer!r}")
    for i, k in enumerate(config.kernels(), 1):
        if k % 2 == 0:
            key = f"kernel_{i}" if getattr(config, f"kernel_{i}") else "kernel"
            raise ConfigError(f"parameter {key!r} = {k} is even; kernel sizes must be odd (they keep the map size "
                              f"with padding k//2)")
    if not config.val_every_epoch:
        needs = [f"{k} {v!r}" for k, v, ok in (("keep", config.keep, config.keep == "last"),
                                                ("patience", config.patience, not config.patience),
                                                ("lr_schedule", config.lr_schedule, config.lr_schedule != "plateau"))
                 if not ok]
        if needs:
            raise ConfigError(f"val_every_epoch false scores validation once, after the last epoch, but "
                              f"{' and '.join(needs)} read(s) it every epoch: set val_every_epoch true, or use keep "
                              f"'last', patience 0 and an lr_schedule other than 'plateau'")
    if config.loss == "mse" and config.label_smoothing:
        raise ConfigError("label_smoothing applies to cross_entropy only; set it to 0 with loss 'mse'")
    return config


# keys only the plain family reads: given to another family they would be ignored without a word
PLAIN_ONLY = ("kernel", "convs_per_block", "batch_norm", "pool", "head", "dense_units", "conv_dropout",
              *(f"kernel_{i}" for i in range(1, MAX_BLOCKS + 1)))


# keys that shape the other families' networks: the nas family's network is all in nas_arch
NAS_IGNORES = (*PLAIN_ONLY, "conv_layers", "filters", "blocks", "stem_width", "downsample", "shortcut", "activation",
               "whiten_bias_epochs", *(f"{k}_{i}" for k in ("filters", "blocks") for i in range(1, MAX_BLOCKS + 1)))


# torchvision's ResNet-18 is fixed: every key that shapes another family's network would be ignored
FIXED_IGNORES = (*NAS_IGNORES, "width_mult", "dropout")


def _check_family_keys(config: TrialConfig, given: Mapping[str, Any]) -> None:
    if config.family == "plain":
        return
    if config.family == "resnet18":
        ignored = [k for k in FIXED_IGNORES if k in given and given[k] != FIELDS[k].default]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)} shape(s) other families only; family 'resnet18' is "
                              f"torchvision's fixed network and would ignore them: drop them")
        return
    nas = config.family == "nas"
    ignored = [k for k in (NAS_IGNORES if nas else PLAIN_ONLY) if k in given and given[k] != FIELDS[k].default]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)} shape(s) {'the other families' if nas else 'the plain family'} "
                          f"only; family {config.family!r} would ignore them: drop them" +
                          (" (its network is all in nas_arch)" if nas else " or use family 'plain'"))


def _check_dataset_keys(config: TrialConfig, given: Mapping[str, Any]) -> None:
    if config.dataset not in INFO:
        return
    ignored = [f.name for f in fields(FolderOptions) if f.name in given and given[f.name] != FIELDS[f.name].default]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)} shape(s) datasets given by path only; dataset {config.dataset!r} "
                          f"would ignore them: drop them")


def _image_side(config: TrialConfig) -> int:
    """The side of the dataset's images: the table's, image_size, or what the audit of the files chose (image_size
    0; the files are decoded now if they are not cached yet)."""
    if config.dataset in INFO:
        return INFO[config.dataset].shape[1]
    if config.image_size:
        return config.image_size
    try:
        return dataset_info(config.dataset, FolderOptions.of(config)).shape[1]
    except DatasetError as err:
        raise ConfigError(f"dataset: {err}") from None


# family -> the most stages (groups) an image side allows: each one after the first halves the map (trial/networks.py)
MAX_STAGES = {"residual": ("stages (every one after the first halves the map, rounding up)", residual_max_stages),
              "airbench": ("groups (each halves the map, rounding down, after the 2x2 stem)", airbench_max_groups)}


def _check_stages(config: TrialConfig) -> None:
    """The residual family's stages and the airbench family's groups halve the map; more of them than the image side
    allows would shrink it below 1x1 (a 16x16 image: 5 residual stages, 3 airbench groups; 28..32: 6 and 4).
    The dataset's side is read only where conv_layers could exceed what the smallest automatic image_size allows."""
    if config.family not in MAX_STAGES:
        return
    what, most_for = MAX_STAGES[config.family]
    if config.dataset not in INFO and not config.image_size and config.conv_layers <= most_for(AUTO_SIDE[0]):
        return   # fits whatever side the audit picks: no need to decode the files here
    side = _image_side(config)
    most = most_for(side)
    if config.conv_layers > most:
        larger = " or a larger image_size" if config.dataset not in INFO else ""
        raise ConfigError(f"parameter 'conv_layers' = {config.conv_layers} is too many {what} for family "
                          f"{config.family!r} on {side}x{side} images: the map would shrink below 1x1; use "
                          f"conv_layers <= {most}{larger}")


def _check_maps(config: TrialConfig) -> None:
    """A plain block's kernel must fit the feature map it sees (the image halved once per block before it, down to
    1x1): with padding k // 2, a kernel wider than 2 * side - 1 has taps that only ever see padding, weights that
    never train (a 3x3 kernel on a 1x1 map is 8/9 dead)."""
    if config.family != "plain":
        return
    side = _image_side(config)
    sizes = plain_sides(side, config.conv_layers)
    keys = [f"kernel_{i}" if getattr(config, f"kernel_{i}") else "kernel" for i in range(1, config.conv_layers + 1)]
    for i, (k, size, key) in enumerate(zip(config.kernels(), sizes, keys), 1):
        if k > 2 * size - 1:
            largest = min(2 * s - 1 for s, other in zip(sizes, keys) if other == key)   # `kernel` sets many blocks
            fewer = f"conv_layers <= {i - 1}" if i > 1 else "a larger image_size"
            raise ConfigError(f"parameter {key!r} = {k} does not fit the {size}x{size} feature map block {i} of "
                              f"{config.conv_layers} sees ({side}x{side} {config.dataset} images halved {i - 1} "
                              f"times; the kernel's outer taps would see only padding); use {key} <= {largest} "
                              f"or {fewer}")


def params_digest(params: Mapping[str, Any]) -> str:
    """A short hash of a parameter dict, independent of key order: how a trial proves which parameters it used."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_params_file(path: str) -> dict[str, Any]:
    """Read a params file (JSON, or YAML by extension; a baseline is one of these) into a dict, without its optional
    top-level "_comment". Raises OSError for an unreadable file, ConfigError for one that is not a mapping."""
    try:
        data = read_data(path)   # a byte-order mark and CRLF ends accepted, a key given twice refused
    except FileFormatError as err:
        raise ConfigError(f"params file {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path} must hold a mapping of parameter names to values")
    data.pop("_comment", None)   # JSON has no comments: a params file may say where its values come from here
    return data


def load_arch_file(path: str) -> dict[str, Any]:
    """An architecture file as a params layer: {"family": "nas", "nas_arch": {...}, ...}. The file is either what
    experiments/nas writes (a params file with nas_arch, the dataset and training keys the search used) or the bare
    dict of labels -> choices. Raises OSError for an unreadable file, ConfigError for one that is neither, or that
    names another family; the architecture itself is checked when the layer is resolved."""
    data = load_params_file(path)
    if "nas_arch" not in data:
        return {"family": "nas", "nas_arch": data}
    if data.get("family", "nas") != "nas":
        raise ConfigError(f"architecture file {path} sets family {data['family']!r}; an architecture is family 'nas'")
    if not isinstance(data["nas_arch"], Mapping):
        raise ConfigError(f"architecture file {path}: nas_arch must be a mapping of labels to choices, got "
                          f"{data['nas_arch']!r}")
    return {**data, "family": "nas"}


def save_arch_file(path: str | Path, arch: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                   comment: str = "") -> dict[str, Any]:
    """Write an architecture search's choice as a params file: {"_comment", "family": "nas", "nas_arch", **params}
    (params: the dataset and the training keys the search used), which `python -m trial --arch FILE` (or --params),
    experiments.report --winner/--baseline and load_arch_file read. Raises ConfigError, before writing anything,
    when the file would not resolve; returns what was written."""
    data = {"_comment": comment, **(params or {}), "family": "nas", "nas_arch": dict(arch)}
    data["nas_arch"] = resolve({k: v for k, v in data.items() if k != "_comment"}).nas_arch   # canonical
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
    return data
