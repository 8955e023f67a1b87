"""Diagnostic of results/bf16-chance (README.md there); run from the repository root with PYTHONPATH=.; not part of the product."""
import copy
import json
import time

import torch

from trial import data as D
from trial.config import resolve
from trial.folder import FolderOptions
from trial.model import build_model
from trial.networks import AirbenchNet
from trial.optim import LOSSES


def probe(model, loss, x, y):
    """The largest relative error ||g_bf16 - g_fp32|| / ||g_fp32|| over the trainable tensors, on one batch, on a copy."""
    start, m, grads = time.perf_counter(), copy.deepcopy(model).train(), []
    rng = torch.get_rng_state()
    for amp in (False, True):
        torch.set_rng_state(rng); m.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = m(x)
        loss(out.float(), y).backward()
        grads.append({n: p.grad.float().clone() for n, p in m.named_parameters() if p.grad is not None})
    floor = 1e-6 * max(g.norm().item() for g in grads[0].values())
    worst = max(((grads[1][n] - g).norm().item() / g.norm().item(), n) for n, g in grads[0].items() if g.norm() > floor)
    return type("R", (), {"relative_error": worst[0], "parameter": worst[1], "seconds": time.perf_counter() - start})
torch.set_num_threads(2)
CM = "/work/data/chinese_mnist/backend/ml_model/data/raw/manifest.csv"
TN = "/work/data/trashnet/dataset-resized"
cases = [(ds, b, extra) for ds, extra in [("mnist", {}), ("fmnist", {}), ("cifar10", {}), (CM, {"image_size": 32}), (TN, {"image_size": 64})]
         for b in ["airbench_cifar10_half", "resnet", "simple_cnn", "resnet18_torchvision"]]
cache = {}
for ds, b, extra in cases:
    p = json.load(open(f"baselines/{b}.json")); p.pop("_comment", None)
    p.update(dataset=ds, tta="none", **extra)
    if p.get("augmentation") == "flip_crop" or ds in (CM, TN): p.pop("augmentation", None)
    try:
        cfg = resolve(p)
    except Exception as e:
        print(ds[-20:], b, "config:", str(e)[:100]); continue
    key = (ds, cfg.image_size)
    if key not in cache:
        cache[key] = D.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, "../shared/data", with_test=False, options=FolderOptions.of(cfg))
    d = cache[key]
    errs = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = build_model(cfg, d.info.shape, len(d.info.classes)).to(memory_format=torch.channels_last)
        if isinstance(m, AirbenchNet): m.init_whitening(d.train_x[:5000])
        idx = torch.randperm(len(d.train_x))[:cfg.batch_size]
        r = probe(m, LOSSES[cfg.loss](cfg), d.train_x[idx].contiguous(memory_format=torch.channels_last), d.train_y[idx])
        errs.append(f"{r.relative_error:.3g} ({r.parameter}, {r.seconds:.1f}s)")
    print(ds[-20:], b, cfg.batch_size, " | ".join(errs), flush=True)
