"""Which module first gives a non-finite value (an output in the forward pass, or the gradient of an output in the
backward pass) when a network trains with the harness's own data, model, optimiser, schedule and batches.

    python -m experiments.studies.find_nonfinite --arch results/cifar10-nas-comparison/evolution-cifar10.json \
        --dataset cifar10 --epochs 2 --steps 600 --threads 2 --data-dir ../shared/data      # bfloat16 autocast
    python -m experiments.studies.find_nonfinite --params baselines/simple_cnn.json --dataset fmnist --fp32
    python -m experiments.studies.find_nonfinite --params baselines/simple_cnn.json --dataset fmnist --smoke

A trial whose loss turns NaN says only the epoch (trial.train.TrainingDiverged). This trains the same config step by
step with a forward hook on every module and a gradient hook on every module output, and stops at the first
non-finite value: it prints the step, the module (its name in the model and its type), the dtype, shape, share of
finite values and largest finite magnitude of the tensor and of the module's inputs, and the parameters whose gradient
is not finite. Without one it prints the loss every --every steps, which shows a network that does not learn (a loss
that stays at ln(10) = 2.30 for ten classes) before it diverges. Bfloat16 autocast is on unless --fp32 (trial.train
runs it only where the CPU has bfloat16 instructions; here it is on regardless, to reproduce a run that had it).

What it found once (2026-12-01, torch 2.14.1): the CIFAR-10 evolution winner stayed at loss 2.30 for 600 steps in
bfloat16 without a non-finite value, where float32 trains, which led to experiments.studies.bf16_ops and the float32
dilated convs of trial.nas_space (results/cifar10-nas-comparison/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


def describe(t: torch.Tensor) -> str:
    f = t.detach().float()
    finite = torch.isfinite(f)
    largest = f[finite].abs().max().item() if finite.any() else float("nan")
    return f"dtype {t.dtype} shape {tuple(t.shape)} finite {finite.float().mean().item():.4f} max|x| {largest:.3g}"


def watch(model: nn.Module, found: list[str]) -> list:
    """Hooks on every module of `model` that append to `found` a line for the first non-finite output (forward) or
    output gradient (backward) while `found` is empty; returns the handles (call .remove() on each to unhook)."""
    def hook(name: str):
        def forward(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                return
            if not found and not torch.isfinite(output).all():
                ins = [describe(i) for i in inputs if isinstance(i, torch.Tensor)]
                found.append(f"forward: {name} ({type(module).__name__}) output {describe(output)}; inputs {ins}")
            if output.requires_grad:
                def backward(grad):
                    if not found and not torch.isfinite(grad).all():
                        found.append(f"backward: gradient of {name} ({type(module).__name__}) output {describe(grad)}")
                output.register_hook(backward)
        return forward
    return [m.register_forward_hook(hook(name or "model")) for name, m in model.named_modules()]


def find_nonfinite(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: Callable,
                   opt: torch.optim.Optimizer, steps: int, amp: bool = True, after_step: Callable[[], None] | None = None,
                   every: int = 50, log=print) -> dict:
    """Train `model` on `batches` for at most `steps` optimiser steps (stopping early when they run out), hooked by
    `watch`; `after_step` runs after each step (a schedule). Returns {"steps": steps taken, "first": the first
    non-finite value's line or None, "step": the step it came in or None, "bad_params": names of parameters with a
    non-finite gradient then, "losses": the loss of every step taken or attempted}."""
    found: list[str] = []
    handles = watch(model, found)
    model.train()
    losses, t0, step = [], time.perf_counter(), 0
    try:
        for x, y in batches:
            if step >= steps:
                break
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            losses.append(loss.item())
            bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            if found or bad or not torch.isfinite(loss):
                first = found[0] if found else f"the loss ({loss.item():.4g}); no module output was non-finite"
                log(f"step {step}: loss {loss.item():.4g}; {first}; parameters with non-finite gradients: {bad[:5]}")
                return {"steps": step, "first": first, "step": step, "bad_params": bad, "losses": losses}
            opt.step()
            if after_step is not None:
                after_step()
            step += 1
            if every and step % every == 0:
                log(f"step {step}: loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s")
    finally:
        for h in handles:
            h.remove()
    log(f"{step} steps, all finite ({'bf16 autocast' if amp else 'fp32'})")
    return {"steps": step, "first": None, "step": None, "bad_params": [], "losses": losses}


def harness_run(cfg, data_dir: str | None, steps: int, amp: bool, every: int, log=print) -> dict:
    """find_nonfinite over the config's own training setup, as trial.train builds it (data split, channels-last
    model, airbench whitening, optimiser, schedule, augmented batches), epoch after epoch until `steps`."""
    from trial import data as data_mod
    from trial.augment import training_transform
    from trial.model import build_model
    from trial.networks import AirbenchNet
    from trial.optim import LOSSES, OPTIMIZERS, SCHEDULES, param_groups
    from trial.train import WHITENING_IMAGES, batches, seed_everything, steps_per_epoch
    seed_everything(cfg.seed)
    d = data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), cfg.train_subset, data_dir,
                         with_test=False)
    model = build_model(cfg, d.info.shape).to(memory_format=torch.channels_last)
    if isinstance(model, AirbenchNet):
        model.init_whitening(d.train_x[:WHITENING_IMAGES])
    opt = OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)
    schedule = SCHEDULES[cfg.lr_schedule](opt, cfg, cfg.epochs * steps_per_epoch(len(d.train_x), cfg.batch_size))
    transform = training_transform(cfg, d.info)

    def all_batches():
        for _ in range(cfg.epochs):
            yield from batches(d.train_x, d.train_y, cfg.batch_size, transform)
    return find_nonfinite(model, all_batches(), LOSSES[cfg.loss](cfg), opt, steps, amp, schedule.after_batch, every,
                          log)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--params", help="a params file (a baseline, a winner's parameters)")
    source.add_argument("--arch", help="an architecture file of experiments.nas")
    p.add_argument("--dataset", help="override the file's dataset")
    p.add_argument("--epochs", type=int, help="override the file's epochs (the schedule's length)")
    p.add_argument("--steps", type=int, default=400, help="stop after this many optimiser steps")
    p.add_argument("--fp32", action="store_true", help="no bfloat16 autocast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--every", type=int, default=50, help="print the loss every this many steps")
    p.add_argument("--data-dir")
    p.add_argument("--smoke", action="store_true", help="256 training images, batch 32, 3 steps")
    p.add_argument("--json", help="write the result (steps, first, step, bad_params, losses) here")
    a = p.parse_args(argv)
    from trial.config import load_arch_file, load_params_file, resolve
    layer = load_arch_file(a.arch) if a.arch else load_params_file(a.params)
    overrides = {k: v for k, v in (("dataset", a.dataset), ("epochs", a.epochs)) if v is not None}
    steps, every = a.steps, a.every
    if a.smoke:
        overrides.update(train_subset=256, val_size=64, batch_size=32)
        steps, every = 3, 1
    cfg = resolve(layer, overrides)
    torch.set_num_threads(a.threads)
    result = harness_run(cfg, a.data_dir, steps, not a.fp32, every, log=lambda s: print(s, flush=True))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"config": cfg.to_dict(), "amp": not a.fp32, "torch": torch.__version__, **result}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
