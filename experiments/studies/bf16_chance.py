"""Why a network learns nothing under bfloat16 autocast: the measurements of results/bf16-chance.

    python -m experiments.studies.bf16_chance compare PARAMS DATASET --seeds 0 1 --epochs 2 [--set KEY=VALUE ...]
    python -m experiments.studies.bf16_chance gradients PARAMS DATASET --seeds 0 1 2 [--set KEY=VALUE ...]
    python -m experiments.studies.bf16_chance levels PARAMS DATASET --seeds 0 1 2 [--set KEY=VALUE ...]

compare: trains PARAMS on DATASET per seed with bfloat16 autocast asked for and with float32 (`amp` false), side by
side in one process, and prints the validation accuracy per epoch, whether the run fell back to float32
(trial/precision.py) and the training seconds. gradients: on one training batch of a fresh network, the largest
relative error ||g_bf16 - g_fp32|| / ||g_fp32|| over the trainable tensors. levels: at initialisation, the fewest
bfloat16 steps (|mean| / 256) per standard deviation over the channels of every batch-norm input. Not part of the
product; say the machine's CPU flags with every figure (bfloat16 is emulated where avx512_bf16 and amx are absent).
"""
from __future__ import annotations

import argparse
import copy
import sys

import torch

from trial import data as data_mod
from trial.config import load_params_file, resolve
from trial.folder import FolderOptions
from trial.model import build_model
from trial.networks import AirbenchNet
from trial.optim import LOSSES
from trial.train import WHITENING_IMAGES, train


def _config(params: dict, dataset: str, seed: int, overrides: dict):
    return resolve(params, {"dataset": dataset, "seed": seed}, overrides)


def _fresh(cfg, d: data_mod.DeviceData) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A network as training starts it (whitening set) and one shuffled training batch, both seeded by cfg.seed."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, d.info.shape, len(d.info.classes)).to(memory_format=torch.channels_last)
    if isinstance(model, AirbenchNet):
        model.init_whitening(d.train_x[:WHITENING_IMAGES])
    idx = torch.randperm(len(d.train_x))[:cfg.batch_size]
    return model, d.train_x[idx].contiguous(memory_format=torch.channels_last), d.train_y[idx]


def gradient_error(model: torch.nn.Module, loss, x: torch.Tensor, y: torch.Tensor) -> tuple[float, str]:
    """The largest ||g_bf16 - g_fp32|| / ||g_fp32|| over the trainable tensors (those whose float32 gradient is above
    1e-6 of the largest), and its tensor's name, from one batch on a copy of `model` (same RNG state both passes)."""
    m, grads, rng = copy.deepcopy(model).train(), [], torch.get_rng_state()
    for amp in (False, True):
        torch.set_rng_state(rng)
        m.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = m(x)
        loss(out.float(), y).backward()
        grads.append({n: p.grad.float().clone() for n, p in m.named_parameters() if p.grad is not None})
    floor = 1e-6 * max(g.norm().item() for g in grads[0].values())
    return max(((grads[1][n] - g).norm().item() / g.norm().item(), n) for n, g in grads[0].items() if g.norm() > floor)


def bf16_levels(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The fewest bfloat16 steps per standard deviation, std / (|mean| * 2^-8), over the channels of every
    BatchNorm2d input of one float32 forward pass of `model` on `x` [N, C, H, W]."""
    worst = []

    def hook(module, inputs, output):
        v = inputs[0].float().transpose(0, 1).flatten(1)
        worst.append((v.std(1) / (v.mean(1).abs() * 2 ** -8 + 1e-30)).min().item())
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return min(worst) if worst else float("inf")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("measure", choices=("compare", "gradients", "levels"))
    p.add_argument("params", help="a params file, e.g. baselines/airbench_cifar10_half.json")
    p.add_argument("dataset", help="a dataset name or path")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data-dir")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config keys over the params file")
    args = p.parse_args(argv)
    overrides = dict(pair.split("=", 1) for pair in args.set)
    params = load_params_file(args.params)
    for seed in args.seeds:
        cfg = _config(params, args.dataset, seed, overrides)
        if args.measure == "compare":
            for amp in (True, False):
                r = train(resolve(cfg.to_dict(), {"amp": amp, "epochs": args.epochs}), data_dir=args.data_dir)
                print(f"seed {seed} amp {amp}: validation {[round(h.get('default', -1), 4) for h in r.history]}, "
                      f"bf16 {r.metrics['bf16_autocast']}, fell back {'amp_fallback' in r.metrics}, "
                      f"{r.metrics['train_seconds']:.0f} s", flush=True)
            continue
        d = data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), cfg.train_subset,
                             args.data_dir, with_test=False, options=FolderOptions.of(cfg))
        model, x, y = _fresh(cfg, d)
        if args.measure == "gradients":
            error, name = gradient_error(model, LOSSES[cfg.loss](cfg), x, y)
            print(f"seed {seed}: largest bf16 gradient error {error:.3g} ({name})", flush=True)
        else:
            print(f"seed {seed}: fewest bf16 levels per std {bf16_levels(model, x):.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
