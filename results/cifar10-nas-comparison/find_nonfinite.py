"""Which module first gives a non-finite value when the CIFAR-10 evolution winner (evolution-cifar10.json beside this
file) trains in bfloat16 autocast on this CPU: the harness's own data, model and batches (trial.train's pieces), with
forward hooks on every module (outputs) and tensor hooks on every module output (gradients).

    PYTHONPATH=. python results/cifar10-nas-comparison/find_nonfinite.py [amp] [steps]

What it showed (2026-12-01, before the fix of trial.nas_space.Float32DilatedConv2d): 600 steps in bfloat16 without a
non-finite value, but the loss stayed at 2.30 (chance) throughout, where float32 trains; that led to op_bf16_check.py,
which found the wrong weight gradient of the dilated depthwise convs.
"""
import sys
import time

import torch

from trial import data as data_mod
from trial.config import load_arch_file, resolve
from trial.model import build_model
from trial.optim import LOSSES, OPTIMIZERS, SCHEDULES, param_groups
from trial.train import batches, steps_per_epoch, training_transform

amp = (sys.argv[1] if len(sys.argv) > 1 else "amp") == "amp"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 400
torch.set_num_threads(2)
torch.manual_seed(0)
cfg = resolve(load_arch_file("results/cifar10-nas-comparison/evolution-cifar10.json"), {"epochs": 2})
d = data_mod.prepare("cifar10", cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, "../shared/data")
model = build_model(cfg, d.info.shape).to(memory_format=torch.channels_last)
opt = OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)
schedule = SCHEDULES[cfg.lr_schedule](opt, cfg, cfg.epochs * steps_per_epoch(len(d.train_x), cfg.batch_size))
loss_fn = LOSSES[cfg.loss](cfg)
found = []


def describe(t):
    f = t.float()
    fin = torch.isfinite(f)
    return (f"dtype {t.dtype} shape {tuple(t.shape)} finite {fin.float().mean():.4f} "
            f"max|x| {f[fin].abs().max() if fin.any() else float('nan'):.3g}")


def forward_hook(name):
    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        if not found and not torch.isfinite(output).all():
            ins = [describe(i) for i in inputs if isinstance(i, torch.Tensor)]
            found.append(f"forward: {name} ({type(module).__name__}) output {describe(output)}; inputs {ins}")
        if output.requires_grad:
            output.register_hook(lambda g: found.append(f"backward: gradient of {name} ({type(module).__name__}) "
                                                        f"output {describe(g)}")
                                 if not found and not torch.isfinite(g).all() else None)
    return hook


for name, module in model.named_modules():
    module.register_forward_hook(forward_hook(name or "model"))
model.train()
t0 = time.time()
step = 0
for epoch in range(cfg.epochs):
    for x, y in batches(d.train_x, d.train_y, cfg.batch_size, training_transform(cfg, d.info)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if found or not torch.isfinite(loss) or bad:
            print(f"step {step}: loss {loss.item():.4g}; {found[0] if found else 'no hook fired'}; "
                  f"parameters with non-finite gradients: {bad[:5]}")
            sys.exit(0)
        opt.step()
        schedule.after_batch()
        step += 1
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
        if step >= steps:
            print(f"{steps} steps, all finite ({'bf16 autocast' if amp else 'fp32'})")
            sys.exit(0)
