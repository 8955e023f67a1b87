"""A network's cost where it runs: parameters, multiply-adds, batch-1 latency and size; and the limits a user sets.

`measure` gives the figures every trial reports beside its accuracy (final.json, the NNI final metric, the report's
Pareto front read them by these names); `broken_limit` compares them with the config's `max_params`, `max_macs` and
`max_latency_ms`, so that a network the user cannot ship is refused before its first training step (trial/train.py).
The figures depend on the architecture and the input shape, not on the weights: they are measured once, on the built
model, before training.

    cost = measure(model, (1, 28, 28), torch.device("cpu"), threads=2)
    cost["macs"], cost["latency_ms"]
"""
from __future__ import annotations

import copy
import io
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ConfigError, TrialConfig
from .model import count_parameters

WARMUP_RUNS = 5      # untimed forward passes first: oneDNN/cuDNN pick and cache their kernels on the first calls
TIMED_RUNS = 20      # timed forward passes; the median is reported
BUDGET_S = 1.0       # seconds the timing may take per device: a slow network gets fewer runs (at least 3 timed)


class ConstraintError(ConfigError):
    """The network breaks a limit of the config (max_params, max_macs, max_latency_ms). The message is one line: the
    limit, the measured value and the fix; `key` names the limit; `metrics` is the final metric dict of the refused
    trial (trial/train.py: `default` 0.0, `refused` True, the measured figures), what the NNI adapter reports."""

    def __init__(self, message: str, key: str, metrics: dict):
        super().__init__(message)
        self.key, self.metrics = key, metrics


def count_macs(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass of `model` in eval mode on one float32 image of `shape` (C, H, W): torch's
    own counter, torch.utils.flop_counter.FlopCounterMode, whose FLOPs count a multiply-add as 2 (so MACs = FLOPs / 2).
    It counts the matrix products and convolutions (aten mm, addmm, bmm, convolution, attention), not element-wise
    operations, normalisation or pooling: the convention of fvcore and ptflops for CNNs. Runs on a copy on the meta
    device (shapes only, no arithmetic), so the model and the global random state are untouched."""
    meta = copy.deepcopy(model).to("meta").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, *shape, device="meta"))
    return int(counter.get_total_flops()) // 2


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the float32 state_dict as torch.save writes it: weights and buffers, the size of model_state.pt."""
    buffer = io.BytesIO()
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency_ms(model: nn.Module, shape: tuple[int, int, int], device: torch.device, warmup: int = WARMUP_RUNS,
               runs: int = TIMED_RUNS, budget_s: float = BUDGET_S) -> float:
    """Median milliseconds of one forward pass of `model` (eval mode, float32, on `device`, where it already is) on a
    batch of one image of `shape` (C, H, W), after `warmup` untimed passes; `runs` timed passes, fewer (at least 3)
    once `budget_s` seconds are spent. On CUDA every pass ends with torch.cuda.synchronize, so the time is the
    kernels' and not their launch's. The input is drawn from a private generator: the global random state, and so
    the training that follows, stay as they were."""
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    for _ in range(warmup):
        model(x)
        if time.perf_counter() - start > budget_s / 4:
            break
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(model: nn.Module, shape: tuple[int, int, int], device: torch.device | str = "cpu", threads: int = 0,
            budget_s: float = BUDGET_S) -> dict:
    """The cost of `model` for images of `shape` (C, H, W): a dict of numbers, the keys trials report
    (final.json, the NNI final metric):

    - params: parameters (trainable or not), a count;
    - macs: multiply-adds of one batch-1 forward pass (count_macs: FlopCounterMode's FLOPs / 2);
    - latency_ms: median ms of a batch-1 forward pass on the CPU, eval mode, float32 (latency_ms: 5 warm-up passes,
      then 20 timed, bounded by `budget_s`), with `threads` torch threads (0: torch's current count);
    - latency_threads: the torch thread count latency_ms was measured with;
    - latency_ms_gpu: the same on `device` when it is a CUDA device (synchronised), absent otherwise;
    - model_bytes: bytes of the float32 state_dict serialised by torch.save (state_dict_bytes). Not the ONNX file's
      size: exporting to ONNX takes 1-3 s per network on a 2-core CPU (torch.onnx's dynamo exporter), more than a
      trial should pay; the two differ by the graph's description, 1-3% for this project's families (plain 850 kB
      vs 859 kB of ONNX, ResNet-20 1.12 MB vs 1.17 MB, airbench at half width 1.99 MB vs 2.01 MB).

    The model is copied for the timing (CPU and float32); it, its mode and the global random state are left as they
    were. 0.01-0.35 s in all with one thread for this project's networks at 28x28 and 32x32 on the 2-core AMD EPYC VM
    (avx2, avx512_bf16; the timing is float32, so bfloat16 plays no part), cores shared with an NNI experiment,
    2026-12-06 (up to about 3 s with two threads that other processes contend with: the timing stops after budget_s
    once 3 passes are timed)."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    cost = {"params": count_parameters(model), "macs": count_macs(model, shape),
            "model_bytes": state_dict_bytes(model), "latency_threads": threads}
    cpu = copy.deepcopy(model).to("cpu", torch.float32).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cost["latency_ms"] = latency_ms(cpu, shape, torch.device("cpu"), budget_s=budget_s)
    finally:
        torch.set_num_threads(previous)
    if device.type == "cuda":
        gpu = copy.deepcopy(model).to(device, torch.float32).eval()
        cost["latency_ms_gpu"] = latency_ms(gpu, shape, device, budget_s=budget_s)
    return cost


# limit key -> (cost key, what it counts, how to print a value)
LIMITS = {"max_params": ("params", "parameters", "{:,}"), "max_macs": ("macs", "multiply-adds", "{:,}"),
          "max_latency_ms": ("latency_ms", "ms of CPU latency (batch 1)", "{:.3g}")}


def broken_limit(cfg: TrialConfig, cost: dict) -> tuple[str, str] | None:
    """(the limit's key, one line: the limit, the measured value and the fix) for the first limit of `cfg` (max_params,
    max_macs, max_latency_ms; 0 = none) that `cost` (measure's dict) breaks; None when it keeps them all."""
    for key, (measured, what, form) in LIMITS.items():
        limit = getattr(cfg, key)
        if limit and cost[measured] > limit:
            fix = ("make the network smaller (width_mult, filters, conv_layers, blocks, dense_units, or another "
                   "architecture)")
            if key == "max_latency_ms":
                fix += f" or give it more CPU threads (threads; measured with {cost['latency_threads']})"
            return key, (f"{key} = {form.format(limit)}, but the network has {form.format(cost[measured])} {what}; "
                         f"{fix}, or raise {key}")
    return None
