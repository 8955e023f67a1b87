"""One prepared check of the GPU path, for the first (short, rare) window on a GPU machine: it proves that the harness
trains on CUDA and measures it side by side, in under 8 minutes, and writes everything into one JSON. It never imports
nni (the GPU machine has none): only torch, the trial harness and the airbench94 reference port.

The window (one NVIDIA H100/H200, torch there, no nni, no network, only the working tree and the named ignored folders
carried, at most 64 MiB; 10 minutes a command, 15 minutes in all):

    # here, before it: the data, into the git-ignored gpu_data/ of the checkout (~39 MiB; prints the carried total)
    python -m experiments.studies.gpu_data --data-dir ../shared/data
    # the GPU tool's run, with carry ["gpu_data"] and timeout_s 540 (the check stops itself by 465 s):
    PYTHONUNBUFFERED=1 python3 -m experiments.studies.gpu_check --out $OUT/gpu_check.json --budget-s 420
    # then commit $OUT/gpu_check.json as results/gpu/gpu_check.json, naming the device it ran on
    # a second try, if the window has time left: only the parts that failed, e.g.
    PYTHONUNBUFFERED=1 python3 -m experiments.studies.gpu_check --out $OUT/gpu_check_2.json --budget-s 200 \
        --parts trial_start concurrency

    # the same script at a tiny size on the CPU (1-2 minutes on the 2-core CPU; tests/test_gpu_check.py runs it):
    python -m experiments.studies.gpu_check --cpu --tiny --out /tmp/gpu_check_cpu.json

Data. CIFAR-10 as far as 64 MiB allows: 12,500 training + 5,000 test images (~34 MiB xz; all 60,000 take 118 MiB),
because the accuracy check is airbench94, a CIFAR-10 recipe whose reference port reads 3x32x32 images only; and
Fashion-MNIST, 10,000 + 2,000 images (~5 MiB), for the trials of the shipped GPU search (nni_configs/fmnist_gpu.yml).
gpu_data/MANIFEST.json holds each file's sha256; the check verifies every file before it starts and refuses in one
line if one is missing, extra or altered (experiments/studies/gpu_data.py).

Sections of the JSON (each figure's unit is in its key's suffix or name, listed in the JSON's "units"):
  environment   device name, memory and capability, torch, CUDA and cuDNN versions, bf16, the code's hash
  families      per network family (plain: baselines/deep_cnn.json, residual: baselines/resnet.json (ResNet-20),
                airbench: baselines/airbench_cifar10.json (airbench94), nas: a CIFAR-10 architecture search's choice
                with recipes/nas_darts.json), each built by the harness's own factory on CIFAR-10, bf16 autocast and
                channels-last as a trial has them: images/s of the harness's training loop (trial.train.train, the
                data on the device; steady state = epochs after the first, the validated last one left out) against a
                bare loop over the same model and batch size (forward, loss, backward, SGD step on batches already on
                the device, no augmentation) and a torch.utils.data.DataLoader pipeline (uint8 images on the host,
                worker processes, pinned memory, copied and normalised per batch, no augmentation); the first epoch
                against the steady ones (cuDNN autotuning, lazy initialisation); peak GPU memory of each loop
  accuracy      airbench94 through the harness (baselines/airbench_cifar10.json, train + validation, last weights,
                test with its test-time augmentation) against the reference port (experiments/studies/
                airbench_reference.py: placed on the device, see `_reference_on`) on the same images and epochs,
                seed by seed, side by side; mean and std over the seeds the time allows (up to 3)
  oom           the harness's own message for a batch that cannot fit (a 16,384-channel plain CNN, the whole training
                split in one batch): one line naming the batch size and the parameter count? (on the CPU: simulated)
  trial_start   `python -m trial` on Fashion-MNIST (baselines/deep_cnn.json, 2 epochs) in a fresh process: from
                its launch to its first training step (and the trial's own startup_seconds), with a cold and a warm
                data cache; the first epoch against the second
  concurrency   1, 2, 4 and 8 such trials at once on the one GPU, as NNI's maxTrialNumberPerGpu would run them: each
                process's images/s (epochs after its first) and their total, and the least number of processes that
                reaches 90% of the best total (what nni_configs/fmnist_gpu.yml's maxTrialNumberPerGpu should be)
Each part has a time limit (a share of --budget-s; the last part whatever the others left) and stops early rather
than overrun; a part that fails records its error and traceback, and the others go on; the JSON is rewritten (atomically) after each part, so a cut-off run still leaves the
finished parts. A watchdog ends the process 45 s after the budget, whatever hangs.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import faulthandler
import gc
import hashlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from trial import data as data_mod
from trial import train as train_mod
from trial.config import ConfigError, load_params_file, resolve
from trial.model import build_model, count_parameters
from trial.networks import AirbenchNet
from trial.train import WHITENING_IMAGES, bf16_supported, train

from . import gpu_data

REPO = Path(__file__).resolve().parents[2]
MIB = 2 ** 20
WATCHDOG_GRACE_S = 45
UNITS = {   # a figure's unit, by its key's suffix (first) or its whole name
    "_images_per_s": "training images per second", "_s": "seconds, wall clock", "_mib": "MiB (2**20 bytes)",
    "_fraction": "fraction in [0, 1]", "_ratio": "dimensionless ratio", "_bytes": "bytes", "_images": "images",
    "batch_size": "images per optimizer step", "params": "parameters", "epochs": "epochs", "steps": "optimizer steps",
    "seed": "seed (integer)", "seeds": "seeds (integers)", "processes": "processes", "levels": "processes",
    "returncode": "process exit status", "returncodes": "process exit statuses", "width_mult": "channel multiplier",
    "dataloader_workers": "worker processes", "cpu_count": "CPU cores", "train_per_class": "images per class",
    "test_per_class": "images per class", "suggested_max_trial_number_per_gpu": "trials per GPU", "files": "files",
    "config": "trial configuration keys, in the units trial/config.py's TrialConfig gives them",
}
INHERITS_UNIT = ("mean", "std")   # these keys, list items and digit keys ("2": ...) take their parent key's unit

# The CIFAR-10 architecture the nni.nas evolution search chose (results/cifar10-nas-comparison/evolution-cifar10.json,
# experiment ynbocfjs, trial E6K6J), copied here so that the check does not depend on a results file.
NAS_ARCH = {
    "s1_width": 16, "s1_depth": 1, "s1_c1_op1": "dil_conv_5x5", "s1_c1_in2": [1], "s1_c1_op2": "skip_connect",
    "s1_c1_in3": [1], "s1_c1_op3": "zero",
    "s2_width": 64, "s2_depth": 1, "s2_c1_op1": "zero", "s2_c1_in2": [1], "s2_c1_op2": "max_pool_3x3",
    "s2_c1_in3": [0], "s2_c1_op3": "sep_conv_3x3",
    "s3_width": 64, "s3_depth": 2, "s3_c1_op1": "dil_conv_5x5", "s3_c1_in2": [1], "s3_c1_op2": "conv_5x5",
    "s3_c1_in3": [0], "s3_c1_op3": "avg_pool_3x3", "s3_c2_op1": "conv_5x5", "s3_c2_in2": [0], "s3_c2_op2": "conv_5x5",
    "s3_c2_in3": [1], "s3_c2_op3": "dil_conv_3x3",
}
FAMILY_SOURCES = {"plain": ["baselines/deep_cnn.json"], "residual": ["baselines/resnet.json"],
                  "airbench": ["baselines/airbench_cifar10.json"], "nas": ["recipes/nas_darts.json"]}
AIRBENCH = "baselines/airbench_cifar10.json"
TRIAL_PARAMS = "baselines/deep_cnn.json"     # the trial the start and concurrency parts run, on Fashion-MNIST
# a batch that cannot fit: 16,384 channels at 32x32 for every image of the split at once (~400 GB in bfloat16 for the
# first activation alone, against 80 GB on an H100 and 141 GB on an H200); few parameters, so the model itself fits
OOM_PARAMS = {"dataset": "cifar10", "family": "plain", "conv_layers": 1, "filters": 4096, "width_mult": 4.0,
              "head": "gap", "dense_units": 0, "dropout": 0.0, "augment": False, "optimizer": "sgd",
              "lr_schedule": "constant", "epochs": 1, "eval_test": False, "val_every_epoch": False, "keep": "last"}


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the GPU sizes, or --tiny's for the CPU."""
    family_epochs: int = 4            # epoch 1 warms up, 2..3 are steady, the last one also validates
    family_images: int = 0            # training images (0 = all of gpu_data's CIFAR-10 but the validation ones)
    val_images: int = 500             # carved from training; validated once, after the last epoch
    loop_warmup_steps: int = 5        # bare and DataLoader loops: steps before the clock starts
    dataloader_workers: int = 4        # 4 x 2 prefetched batches: little /dev/shm even at batch 1024
    accuracy_epochs: int = 10         # airbench94's 9.9, as baselines/airbench_cifar10.json rounds it
    accuracy_seeds: int = 3
    accuracy_train: int = 0           # 0 = all of gpu_data's training images; the test split is used whole unless
    accuracy_test: int = 0            # accuracy_test says otherwise
    trial_epochs: int = 2
    trial_args: tuple[str, ...] = ("--val_size", "1000")
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    concurrency_epochs: int = 4       # of the 1-process run; the others' are sized from it (CONCURRENCY_TRAIN_S)
    overrides: dict = field(default_factory=dict)    # every family's config
    max_batch: int = 0                # 0 = the configs' own batch sizes
    cold_and_warm: bool = True


GPU = Sizes()
TINY = Sizes(family_epochs=3, family_images=128, val_images=32, loop_warmup_steps=1, dataloader_workers=1,
             accuracy_epochs=2, accuracy_seeds=1, accuracy_train=256, accuracy_test=128, trial_epochs=2,
             trial_args=("--train_subset", "256", "--val_size", "64", "--width_mult", "0.25", "--threads", "1"),
             concurrency=(1, 2), concurrency_epochs=2, overrides={"width_mult": 0.25, "threads": 1}, max_batch=32,
             cold_and_warm=False)
PART_SHARES = {"families": 0.25, "accuracy": 0.22, "oom": 0.05, "trial_start": 0.10, "concurrency": 0.33}
CONCURRENCY_TRAIN_S = 6.0   # seconds of training per process, alone, at every level: long against start-up jitter


@dataclass
class Context:
    device: torch.device
    data_dir: Path
    sizes: Sizes
    cpu: bool
    work: Path                       # temporary folder: the private data cache, trial outputs
    train_images: dict[str, int]     # training images of each dataset in gpu_data (its manifest)
    cifar: data_mod.DeviceData | None = None

    def family_data(self) -> data_mod.DeviceData:
        """CIFAR-10 on the device, split as a trial splits it: validation carved from training, no test."""
        if self.cifar is None:
            self.cifar = data_mod.prepare("cifar10", self.sizes.val_images, 0, self.device, self.sizes.family_images,
                                          self.data_dir, download=False, with_test=False)
        return self.cifar

    def amp(self) -> bool:
        return bf16_supported(self.device)


# ---------------------------------------------------------------------------------------------------- small helpers
def unit_of(key: str) -> str | None:
    """The unit of a figure stored under `key` (UNITS: the longest matching suffix, or the whole name)."""
    for name in sorted(UNITS, key=len, reverse=True):
        if key == name.lstrip("_") or (name.startswith("_") and key.endswith(name)):
            return UNITS[name]
    return None


def figures(obj, key: str = "") -> list[tuple[str, object]]:
    """Every number in a record as (the key that gives its unit, value); a "config" subtree is the trial's own keys
    and is left out."""
    if isinstance(obj, dict):
        return [f for k, v in obj.items() if k != "config"
                for f in figures(v, key if k in INHERITS_UNIT or k.isdigit() else k)]
    if isinstance(obj, list):
        return [f for v in obj for f in figures(v, key)]
    return [(key, obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> dict:
    """Peak GPU memory since reset_peak; on the CPU the process's peak resident memory (never reset)."""
    if device.type == "cuda":
        return {"peak_gpu_mib": torch.cuda.max_memory_allocated(device) / MIB}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def clean(obj):
    """JSON-safe: non-finite floats become None (never written as NaN), tuples lists, paths strings."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, record: dict) -> None:
    """Atomically: a reader (or a run cut off mid-write) sees the previous complete file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(clean(record), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def say(line: str) -> None:
    print(f"[gpu_check] {line}", file=sys.stderr, flush=True)


def code_sha256() -> str:
    """A hash of the code that produced the figures: the harness, this check and the reference port."""
    h = hashlib.sha256()
    files = sorted((REPO / "trial").glob("*.py")) + [REPO / "experiments" / "studies" / n for n in
                                                      ("gpu_check.py", "gpu_data.py", "airbench_reference.py")]
    for f in files:
        h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch_version": str(torch.__version__), "cuda_version": torch.version.cuda,
           "cudnn_version": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
           "python_version": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "bf16_autocast": bf16_supported(device), "channels_last": True,
           "code_sha256": code_sha256()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, gpu_total_mib=props.total_memory / MIB,
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=str(props.multi_processor_count),
                   cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    else:
        env["device_name"] = f"cpu: {platform.processor() or platform.machine()}"
    return env


# ---------------------------------------------------------------------------------------------------- families
def family_params(family: str) -> dict:
    params: dict = {}
    for source in FAMILY_SOURCES[family]:
        params.update(load_params_file(str(REPO / source)))
    if family == "nas":
        params.update(family="nas", nas_arch=NAS_ARCH)
    return params


def family_config(ctx: Context, family: str):
    params = family_params(family)
    # validation once, after the last epoch (its time is left out of the steady state), which the plateau schedule
    # cannot have: it reads validation every epoch, so that config trains at a constant rate here
    over = {"dataset": "cifar10", "epochs": ctx.sizes.family_epochs, "val_size": ctx.sizes.val_images,
            "eval_test": False, "val_every_epoch": False, "keep": "last", "patience": 0, "seed": 0,
            "device": str(ctx.device), **ctx.sizes.overrides}
    if resolve(params).lr_schedule == "plateau":
        over["lr_schedule"] = "constant"
    if ctx.sizes.max_batch:
        over["batch_size"] = min(resolve(params).batch_size, ctx.sizes.max_batch)
    return resolve(params, over), over


def fresh_model(cfg, d: data_mod.DeviceData, device: torch.device) -> torch.nn.Module:
    """The model a trial of `cfg` trains, built as trial.train builds it (factory, channels-last, whitening)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, d.info.shape).to(device, memory_format=torch.channels_last)
    if isinstance(model, AirbenchNet):
        model.init_whitening(d.train_x[:WHITENING_IMAGES])
    return model.train()


def harness_loop(ctx: Context, cfg) -> dict:
    d = ctx.family_data()
    reset_peak(ctx.device)
    result = train(cfg, data=d)
    seconds = [m["epoch_seconds"] for m in result.history]
    steady = seconds[1:-1] or seconds[-1:]
    n = len(d.train_x)
    return {"images_per_s": n / statistics.median(steady), "first_epoch_s": seconds[0],
            "steady_epoch_s": statistics.median(steady), "epoch_s": seconds,
            "first_epoch_extra_s": seconds[0] - statistics.median(steady),
            "whole_run_images_per_s": n * len(seconds) / result.metrics["train_seconds"],
            "train_s": result.metrics["train_seconds"], "params": result.metrics["params"],
            "bf16_autocast": result.metrics["bf16_autocast"], **peak_mib(ctx.device)}


def _sgd_step(model, opt, x, y, amp: bool) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_loop(ctx: Context, cfg, deadline: float) -> dict:
    """The least code that trains this model: batches sliced from tensors already on the device, no augmentation."""
    d, device, amp = ctx.family_data(), ctx.device, ctx.amp()
    model = fresh_model(cfg, d, device)
    # the speed is measured, not the result: a small learning rate keeps any model finite
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batch = min(cfg.batch_size, len(d.train_x))
    order = torch.randperm(len(d.train_x), device=device)
    starts = list(range(0, len(order) - batch + 1, batch))
    for start in starts[:ctx.sizes.loop_warmup_steps]:
        _sgd_step(model, opt, d.train_x[order[start:start + batch]], d.train_y[order[start:start + batch]], amp)
    sync(device)
    reset_peak(device)
    images, t0 = 0, time.perf_counter()
    for start in starts:     # one epoch's worth of full batches, or until the deadline
        idx = order[start:start + batch]
        _sgd_step(model, opt, d.train_x[idx], d.train_y[idx], amp)
        images += batch
        if time.time() > deadline:
            break
    sync(device)
    seconds = time.perf_counter() - t0
    return {"images_per_s": images / seconds, "timed_images": images, "timed_s": seconds, "batch_size": batch,
            "optimizer": "torch.optim.SGD(lr=1e-3, momentum=0.9)", **peak_mib(device)}


def dataloader_loop(ctx: Context, cfg, deadline: float) -> dict:
    """The conventional pipeline: uint8 images on the host, a shuffling DataLoader with worker processes and pinned
    memory, each batch copied to the device and normalised there; the same model, batch size and precision."""
    d, device, amp = ctx.family_data(), ctx.device, ctx.amp()
    raw = data_mod.load("cifar10", ctx.data_dir, download=False)
    train_idx, _ = data_mod.split_indices(len(raw.train_x), ctx.sizes.val_images, 0)
    if ctx.sizes.family_images:
        train_idx = train_idx[:ctx.sizes.family_images]
    dataset = torch.utils.data.TensorDataset(raw.train_x[train_idx], raw.train_y[train_idx])   # the same images
    batch = min(cfg.batch_size, len(dataset))
    workers = ctx.sizes.dataloader_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    norm = data_mod.Normalize(d.info).to(device)
    model = fresh_model(cfg, d, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images, t_start, t0 = 0, time.perf_counter(), None
    first_batch_s = None
    for step, (x, y) in enumerate(loader):
        if first_batch_s is None:
            first_batch_s = time.perf_counter() - t_start     # worker start-up and the first collation
        x = norm(x.to(device, non_blocking=True))
        y = y.to(device, non_blocking=True)
        _sgd_step(model, opt, x, y, amp)
        if step + 1 == ctx.sizes.loop_warmup_steps:
            sync(device)
            reset_peak(device)
            t0 = time.perf_counter()
        elif t0 is not None:
            images += batch
            if time.time() > deadline:
                break
    sync(device)
    if t0 is None or not images:
        raise RuntimeError(f"the DataLoader gave {len(loader)} batches of {batch}, too few to time after "
                           f"{ctx.sizes.loop_warmup_steps} warm-up steps")
    seconds = time.perf_counter() - t0
    return {"images_per_s": images / seconds, "timed_images": images, "timed_s": seconds, "batch_size": batch,
            "first_batch_s": first_batch_s, "dataloader_workers": workers, "pin_memory": device.type == "cuda",
            **peak_mib(device)}


def part_families(ctx: Context, deadline: float) -> dict:
    d = ctx.family_data()
    out = {"dataset": "cifar10", "train_images": len(d.train_x), "val_images": len(d.val_x),
           "bf16_autocast": ctx.amp(), "sources": FAMILY_SOURCES,
           "data_on_device_mib": (d.train_x.nbytes + d.val_x.nbytes) / MIB, "by_family": {}}
    families = list(FAMILY_SOURCES)
    for i, family in enumerate(families):
        left = (deadline - time.time()) / (len(families) - i)
        if left <= 1:
            out["by_family"][family] = {"skipped": "the part's time ran out"}
            continue
        family_deadline = time.time() + left
        entry: dict = {}
        out["by_family"][family] = entry
        try:
            cfg, over = family_config(ctx, family)
            entry.update(config=over, batch_size=cfg.batch_size, params=count_parameters(
                build_model(cfg, d.info.shape)), augment=cfg.augment, optimizer=cfg.optimizer)
            entry["harness"] = harness_loop(ctx, cfg)
            half = time.time() + (family_deadline - time.time()) / 2
            entry["bare"] = bare_loop(ctx, cfg, half)
            entry["dataloader"] = dataloader_loop(ctx, cfg, family_deadline)
            entry["harness_vs_bare_ratio"] = entry["harness"]["images_per_s"] / entry["bare"]["images_per_s"]
            entry["dataloader_vs_bare_ratio"] = entry["dataloader"]["images_per_s"] / entry["bare"]["images_per_s"]
            entry["harness_vs_dataloader_ratio"] = (entry["harness"]["images_per_s"]
                                                    / entry["dataloader"]["images_per_s"])
            say(f"{family}: harness {entry['harness']['images_per_s']:,.0f} img/s, bare "
                f"{entry['bare']['images_per_s']:,.0f}, DataLoader {entry['dataloader']['images_per_s']:,.0f}; "
                f"first epoch {entry['harness']['first_epoch_s']:.2f} s vs {entry['harness']['steady_epoch_s']:.2f} s")
        except Exception as err:   # one family's failure (an op without a CUDA kernel, say) must not lose the others
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            say(f"{family}: FAILED {entry['error']}")
        free_device_memory(ctx.device)
    return out


# ---------------------------------------------------------------------------------------------------- accuracy
@contextlib.contextmanager
def _reference_on(ref, device: torch.device):
    """Run the reference port on `device` without changing it: it builds its network on the CPU, keeps its
    normalisation constants there and autocasts on the CPU only. For the call, its network is moved to the device
    after it is built (as the original's `.cuda()`), the constants live on the device and its `--bf16` autocast is
    the device's; everything else (data pipeline, whitening, optimiser, lookahead, TTA) runs as written."""
    saved = {name: getattr(ref, name) for name in ("make_net", "CIFAR_MEAN", "CIFAR_STD", "_autocast")}
    ref.make_net = lambda width_mult=1.0: saved["make_net"](width_mult).to(device)
    ref.CIFAR_MEAN, ref.CIFAR_STD = saved["CIFAR_MEAN"].to(device), saved["CIFAR_STD"].to(device)
    ref._autocast = lambda bf16: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    try:
        yield ref
    finally:
        for name, value in saved.items():
            setattr(ref, name, value)


def part_accuracy(ctx: Context, deadline: float) -> dict:
    from . import airbench_reference as ref
    device, sizes, amp = ctx.device, ctx.sizes, ctx.amp()
    s = data_mod.load("cifar10", ctx.data_dir, download=False)
    n_train = min(sizes.accuracy_train or len(s.train_x), len(s.train_x))
    n_test = min(sizes.accuracy_test or len(s.test_x), len(s.test_x))
    train_x, train_y = s.train_x[:n_train].to(device), s.train_y[:n_train].to(device)
    test_x, test_y = s.test_x[:n_test].to(device), s.test_y[:n_test].to(device)
    info = data_mod.INFO["cifar10"]
    # the harness trains on exactly these images (train + validation protocol, as experiments.results.retrain's
    # train_val): the "validation" tensors are a slice of the training images, scored once and not used
    d = data_mod.DeviceData(data_mod.normalise(train_x, info, device), train_y,
                            data_mod.normalise(train_x[:sizes.val_images], info, device), train_y[:sizes.val_images],
                            data_mod.normalise(test_x, info, device), test_y, info)
    over = {"epochs": sizes.accuracy_epochs, "keep": "last", "patience": 0, "eval_test": True,
            "val_every_epoch": False, "device": str(device), "amp": True, **sizes.overrides}
    if sizes.max_batch:
        over["batch_size"] = sizes.max_batch
    params = load_params_file(str(REPO / AIRBENCH))
    width = resolve(params, over).width_mult
    batch = resolve(params, over).batch_size
    out = {"dataset": "cifar10", "train_images": n_train, "test_images": n_test, "epochs": sizes.accuracy_epochs,
           "width_mult": width, "batch_size": batch, "bf16_autocast": amp, "harness_params": AIRBENCH,
           "config": over, "reference": f"{ref.SOURCE_REPO} {ref.SOURCE_PATH} @ {ref.SOURCE_COMMIT}",
           "metric": "test accuracy with airbench94's test-time augmentation (mirror + translate) on the same images",
           "steps_note": "the reference drops each epoch's last partial batch (airbench's loader), the harness keeps "
                         "it", "runs": []}
    for seed in range(sizes.accuracy_seeds):
        t0 = time.time()
        with _reference_on(ref, device):
            r = ref.train_reference(train_x, train_y, test_x, test_y, float(sizes.accuracy_epochs), width, seed=seed,
                                    bf16=amp, batch_size=batch, log=None)
        reset_peak(device)
        h = train(resolve(params, over, {"seed": seed}), data=d)
        run = {"seed": seed,
               "reference": {"test_accuracy_tta_fraction": r["test_accuracy_tta"],
                             "test_accuracy_no_tta_fraction": r["test_accuracy"], "train_s": r["train_seconds"],
                             "tta_s": r["tta_seconds"], "steps": r["total_train_steps"]},
               "harness": {"test_accuracy_tta_fraction": h.metrics["test_accuracy"],
                           "train_s": h.metrics["train_seconds"], "params": h.metrics["params"],
                           "steps": sizes.accuracy_epochs * train_mod.steps_per_epoch(n_train, batch),
                           **peak_mib(device)}}
        out["runs"].append(run)
        pair_s = time.time() - t0
        say(f"accuracy seed {seed}: reference {r['test_accuracy_tta']:.4f}, harness {h.metrics['test_accuracy']:.4f} "
            f"({pair_s:.1f} s for the pair)")
        if time.time() + pair_s > deadline:
            break
    out["seeds"] = [run["seed"] for run in out["runs"]]
    ref_acc = [r["reference"]["test_accuracy_tta_fraction"] for r in out["runs"]]
    h_acc = [r["harness"]["test_accuracy_tta_fraction"] for r in out["runs"]]
    out["reference_test_accuracy_fraction"] = mean_std(ref_acc)
    out["harness_test_accuracy_fraction"] = mean_std(h_acc)
    out["harness_minus_reference_fraction"] = statistics.fmean(h_acc) - statistics.fmean(ref_acc)
    out["reference_train_s"] = mean_std([r["reference"]["train_s"] for r in out["runs"]])
    out["harness_train_s"] = mean_std([r["harness"]["train_s"] for r in out["runs"]])
    return out


# ---------------------------------------------------------------------------------------------------- out of memory
def part_oom(ctx: Context, deadline: float) -> dict:
    d = ctx.family_data()
    batch = len(d.train_x)
    cfg = resolve(OOM_PARAMS, {"batch_size": batch, "device": str(ctx.device), "val_size": ctx.sizes.val_images})
    params = count_parameters(build_model(cfg, d.info.shape))
    out = {"batch_size": batch, "params": params, "config": {**OOM_PARAMS, "batch_size": batch},
           "simulated": ctx.cpu}
    saved = train_mod.train_epoch
    if ctx.cpu:
        # a real out-of-memory on the CPU would take the machine's RAM (or the kernel's OOM killer) with it: raise
        # the error CUDA raises, where CUDA would, and see what the harness makes of it
        def train_epoch(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 400.00 GiB (simulated by gpu_check "
                                         "--cpu)")
        train_mod.train_epoch = train_epoch
    t0 = time.perf_counter()
    try:
        train(cfg, data=d)
        out.update(raised=False, message=None)
    except ConfigError as err:          # the harness caught it: its own one-line message
        out.update(raised=True, harness_caught=True, message=str(err))
    except torch.OutOfMemoryError as err:   # the harness let it through (trial/train.py should catch it)
        out.update(raised=True, harness_caught=False, message=str(err).splitlines()[0] if str(err) else "")
    finally:
        train_mod.train_epoch = saved
    out["seconds_to_error_s"] = time.perf_counter() - t0
    message = out["message"] or ""
    out.update(one_line="\n" not in message.strip(), names_batch_size=f"batch_size {batch}" in message,
               names_params=f"{params:,}" in message)
    free_device_memory(ctx.device)
    if ctx.device.type == "cuda":
        out["allocated_after_mib"] = torch.cuda.memory_allocated(ctx.device) / MIB
    say(f"oom: {message!r}")
    return out


# ---------------------------------------------------------------------------------------------------- trial processes
def trial_command(ctx: Context, out_dir: Path, epochs: int | str, seed: int | str = 0) -> list[str]:
    return [sys.executable, "-m", "trial", "--params", TRIAL_PARAMS, "--dataset", "fmnist", "--data-dir",
            str(ctx.data_dir), "--epochs", str(epochs), "--eval_test", "false", "--seed", str(seed),
            "--device", str(ctx.device), "--output-dir", str(out_dir), *ctx.sizes.trial_args]


def trial_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}   # never the NNI path of the adapter
    env.update(CNNSEARCH_CACHE=str(cache), CNNSEARCH_NO_DOWNLOAD="1", PYTHONUNBUFFERED="1")
    return env


def run_trials(ctx: Context, label: str, n: int, epochs: int, cache: Path, deadline: float) -> list[dict]:
    """Start `n` trials at once (outputs and logs under the work folder), wait for all of them (killing any still
    running at the deadline), and return what each one recorded."""
    procs = []
    for i in range(n):
        out = ctx.work / f"{label}-{i}"
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / "log.txt", "wb")
        launched = time.time()
        proc = subprocess.Popen(trial_command(ctx, out, epochs, seed=i), cwd=REPO, env=trial_env(cache),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, out, log, launched))
    runs = []
    for proc, out, log, launched in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()          # a process this check started, by its own handle
            proc.wait()
        log.close()
        runs.append(read_trial(ctx, proc.returncode, out, launched))
    return runs


def read_trial(ctx: Context, returncode: int, out: Path, launched: float) -> dict:
    """What a finished trial wrote (final.json, metrics.jsonl, config.json), or its log's tail if it wrote none."""
    run = {"returncode": returncode}
    try:
        final = json.loads((out / "final.json").read_text())
        epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        seconds = [e["epoch_seconds"] for e in epochs]
        steady = statistics.median(seconds[1:] or seconds)
        config = json.loads((out / "config.json").read_text())
        # training images per epoch: the split (as gpu_data wrote it) minus validation, or the subset
        images = ctx.train_images[config["dataset"]] - config["val_size"]
        images = min(images, config["train_subset"]) if config.get("train_subset") else images
        # final.json is written right after the last epoch: what came before the epochs is the start-up, timed
        # from this side (launch to the first step); the trial's own startup_seconds counts from psutil's process
        # creation time, which Linux dates in whole seconds of boot time (it can be off by up to a second)
        launch_to_end = (out / "final.json").stat().st_mtime - launched
        run.update(launch_to_first_step_s=launch_to_end - sum(seconds), startup_s=final["startup_seconds"],
                   launch_to_end_s=launch_to_end, train_s=final["train_seconds"], epoch_s=seconds,
                   first_epoch_s=seconds[0], steady_epoch_s=steady, first_epoch_extra_s=seconds[0] - steady,
                   train_images=images, images_per_s=images / steady, device_name=final.get("device_name"))
    except (OSError, ValueError, KeyError, IndexError, statistics.StatisticsError) as err:
        log = (out / "log.txt").read_text(errors="replace") if (out / "log.txt").is_file() else ""
        run.update(error=f"no result ({type(err).__name__}: {err})", log_tail=log[-2000:])
    return run


def part_trial_start(ctx: Context, deadline: float) -> dict:
    out = {"command": " ".join(trial_command(ctx, Path("OUT"), ctx.sizes.trial_epochs)), "dataset": "fmnist",
           "measures": "launch_to_first_step_s: from starting the process to its first training step (its end "
                       "less its epochs); startup_s: the same as the trial records it (from psutil's process creation "
                       "time); first_epoch_extra_s: the first epoch's seconds minus the second's (cuDNN autotuning, "
                       "lazy initialisation); a cold cache decodes the data files, a warm one reads the decoded "
                       "tensors"}
    cold = ctx.work / "cache-trials"      # fresh: this process decodes into its own cache (private_cache)
    for label in ("cold", "warm") if ctx.sizes.cold_and_warm else ("cold",):
        if time.time() >= deadline:
            out[label] = {"skipped": "the part's time ran out"}
            continue
        out[label] = run_trials(ctx, f"start-{label}", 1, ctx.sizes.trial_epochs, cold, deadline)[0]
        r = out[label]
        say(f"trial start ({label} cache): " + (f"{r['launch_to_first_step_s']:.2f} s to the first step, first epoch "
                                               f"{r['first_epoch_s']:.2f} s vs {r['steady_epoch_s']:.2f} s"
                                               if "error" not in r else r["error"]))
    return out


def part_concurrency(ctx: Context, deadline: float) -> dict:
    cache = ctx.work / "cache-trials"     # warm when trial_start ran; else the first level decodes once
    out = {"command": " ".join(trial_command(ctx, Path("OUT_i"), "EPOCHS", "i")), "dataset": "fmnist",
           "measures": "images_per_s of a process: its training images over the median seconds of its epochs after "
                       "the first (validation included, as a trial runs); total: their sum while all run at once",
           "levels": list(ctx.sizes.concurrency), "by_processes": {}}
    # what a level costs besides its epochs (start-up, first epoch): a guess until the first level measures it
    epochs, epoch_alone_s, overhead_s = ctx.sizes.concurrency_epochs, None, 15.0
    for n in ctx.sizes.concurrency:
        left = deadline - time.time()
        if epoch_alone_s is not None and not ctx.cpu:
            # each process trains about CONCURRENCY_TRAIN_S (alone); if the GPU cannot overlap n of them at all, the
            # level takes n times that: fewer epochs (at least 3) to fit what is left, else the level is skipped
            epochs = min(60, max(3, round(CONCURRENCY_TRAIN_S / epoch_alone_s)))
            while epochs > 3 and overhead_s + n * epochs * epoch_alone_s > left:
                epochs -= 1
        if left < overhead_s + n * epochs * (epoch_alone_s or 0):
            out["by_processes"][str(n)] = {"skipped": f"{left:.0f} s left in the part, too little for {n} processes"}
            continue
        t0 = time.time()
        runs = run_trials(ctx, f"conc-{n}", n, epochs, cache, deadline)
        wall = time.time() - t0
        ok = [r for r in runs if "error" not in r]
        level = {"processes": n, "epochs": epochs, "wall_s": wall, "returncodes": [r["returncode"] for r in runs],
                 "runs": runs}
        if ok:
            rates = [r["images_per_s"] for r in ok]
            level.update(per_process_images_per_s=rates, total_images_per_s=sum(rates),
                         launch_to_first_step_s=[r["launch_to_first_step_s"] for r in ok],
                         aggregate_with_startup_images_per_s=sum(r["train_images"] * epochs for r in ok) / wall)
        if len(ok) < n:
            level["error"] = f"{n - len(ok)} of {n} processes gave no result (see runs[].log_tail)"
        out["by_processes"][str(n)] = level
        if n == ctx.sizes.concurrency[0] and ok:
            epoch_alone_s = statistics.median(r["steady_epoch_s"] for r in ok)
            overhead_s = max(r["launch_to_first_step_s"] + r["first_epoch_extra_s"] for r in ok) + 5.0
        say(f"concurrency {n}: " + (f"total {level['total_images_per_s']:,.0f} img/s, per process "
                                    + ", ".join(f"{x:,.0f}" for x in level["per_process_images_per_s"])
                                    if ok else level.get("error", "")) + f" ({wall:.1f} s)")
    totals = {n: lv["total_images_per_s"] for n, lv in out["by_processes"].items() if "total_images_per_s" in lv}
    if totals:
        base = totals.get(str(ctx.sizes.concurrency[0]))
        if base:
            out["scaling_vs_one_ratio"] = {n: t / base for n, t in totals.items()}
        best = max(totals.values())
        out["suggested_max_trial_number_per_gpu"] = min(int(n) for n, t in totals.items() if t >= 0.9 * best)
    return out


# ---------------------------------------------------------------------------------------------------- main
PARTS = {"families": part_families, "accuracy": part_accuracy, "oom": part_oom, "trial_start": part_trial_start,
         "concurrency": part_concurrency}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.studies.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "results" / "gpu" / "gpu_check.json", help="the JSON to write")
    p.add_argument("--budget-s", type=float, default=None,
                   help="seconds for all parts (default 420 on a GPU, 300 with --cpu); the process ends by "
                        f"budget + {WATCHDOG_GRACE_S} s whatever happens")
    p.add_argument("--data-dir", type=Path, default=gpu_data.DEFAULT_OUT, help="what gpu_data wrote (default "
                   "gpu_data/ in the checkout)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (the out-of-memory part is then simulated)")
    p.add_argument("--tiny", action="store_true", help="a few hundred images, 1-2 epochs, 1 and 2 processes")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="run only these parts")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    budget = args.budget_s or (300.0 if args.cpu else 420.0)
    started = time.time()
    deadline = started + budget
    with contextlib.suppress(AttributeError, ValueError, OSError):   # no real stderr (in-process under pytest)
        faulthandler.dump_traceback_later(budget + WATCHDOG_GRACE_S, exit=True, file=sys.__stderr__)
    record = {"check": "experiments/studies/gpu_check.py",
              "command": " ".join(["python", "-m", "experiments.studies.gpu_check",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "mode": ("cpu" if args.cpu else "gpu") + (" tiny" if args.tiny else ""), "started": now(),
              "budget_s": budget, "units": UNITS}
    try:
        try:
            manifest = gpu_data.verify(args.data_dir)
        except gpu_data.DataCheckError as err:
            print(f"error: {err}", file=sys.stderr)
            write_json(args.out, {**record, "data": {"error": str(err)}, "finished": now()})
            return 2
        if not args.cpu and not torch.cuda.is_available():
            message = "torch sees no CUDA device; this check is for a GPU machine (use --cpu --tiny to try it here)"
            print(f"error: {message}", file=sys.stderr)
            write_json(args.out, {**record, "environment": {"error": message}, "finished": now()})
            return 2
        device = torch.device("cpu" if args.cpu else "cuda")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True     # as trial.train sets it
        data = manifest["datasets"]
        record["data"] = {"dir": str(args.data_dir), "verified_sha256": True, "files": len(manifest["files"]),
                          "total_mib": manifest["total_bytes"] / MIB, "code_at_build": manifest.get("code"),
                          "datasets": {name: {k: v for k, v in d.items() if k != "source_sha256"}
                                       for name, d in data.items()},
                          "why": "CIFAR-10 (a subset: 64 MiB carried at most) for the families and airbench94's "
                                 "accuracy check (a CIFAR-10 recipe); Fashion-MNIST for the trials of the GPU search "
                                 "(nni_configs/fmnist_gpu.yml)"}
        record["environment"] = environment(device)
        write_json(args.out, record)
        say(f"{record['environment']['device_name']}, torch {torch.__version__}, CUDA {torch.version.cuda}; budget "
            f"{budget:.0f} s")
        with tempfile.TemporaryDirectory(prefix="gpu_check-") as work, private_cache(Path(work)):
            ctx = Context(device, args.data_dir.resolve(), TINY if args.tiny else GPU, args.cpu, Path(work),
                          {name: d["train_images"] for name, d in data.items()})
            for name in args.parts:
                if name in ("trial_start", "concurrency"):
                    ctx.cifar = None          # the trial processes need the GPU's memory more than this process
                    free_device_memory(device)
                record[name] = run_part(name, ctx, budget, deadline, last=name == args.parts[-1])
                record["finished"] = now()
                write_json(args.out, record)
    finally:
        faulthandler.cancel_dump_traceback_later()
    record["nni_imported"] = "nni" in sys.modules
    record["total_s"] = time.time() - started
    record["finished"] = now()
    write_json(args.out, record)
    print(json.dumps(clean(record), indent=2))
    failed = [path for name in args.parts for path in errors(record.get(name, {}), name)]
    say(f"done in {record['total_s']:.0f} s -> {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def errors(section, path: str) -> list[str]:
    """Where a section recorded an error: "families.by_family.nas", "concurrency.by_processes.8", ..."""
    if isinstance(section, dict):
        return ([path] if "error" in section else []) + [e for k, v in section.items() if k != "runs"
                                                         for e in errors(v, f"{path}.{k}")]
    return []


@contextlib.contextmanager
def private_cache(work: Path):
    """A data cache of this run's own (the trials it starts get another, see part_trial_start), and no downloads;
    the environment is restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("CNNSEARCH_CACHE", "CNNSEARCH_NO_DOWNLOAD")}
    os.environ.update(CNNSEARCH_CACHE=str(work / "cache"), CNNSEARCH_NO_DOWNLOAD="1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_part(name: str, ctx: Context, budget: float, deadline: float, last: bool = False) -> dict:
    """One part under its time limit (its share of the budget; the last part whatever the others left; never past
    the whole budget); an error is recorded in its section, with the traceback, and the next part runs."""
    t0 = time.time()
    if t0 >= deadline:
        return {"skipped": "the budget was spent before this part"}
    part_deadline = deadline if last else min(deadline, t0 + PART_SHARES[name] * budget)
    say(f"{name}: up to {part_deadline - t0:.0f} s")
    try:
        section = PARTS[name](ctx, part_deadline)
    except Exception as err:
        section = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        say(f"{name}: FAILED {section['error']}")
    section.update(started=datetime.datetime.fromtimestamp(t0, datetime.UTC).isoformat(timespec="seconds"),
                   part_s=time.time() - t0, limit_s=part_deadline - t0)
    return section


if __name__ == "__main__":
    sys.exit(main())
