"""Diagnostic of results/bf16-chance (README.md there); run from the repository root with PYTHONPATH=.; not part of the product."""
import json

import torch

from trial import data as D
from trial.config import resolve
from trial.folder import FolderOptions
from trial.model import build_model

torch.set_num_threads(2)
CM = "/work/data/chinese_mnist/backend/ml_model/data/raw/manifest.csv"
for ds, extra in [("mnist", {}), ("fmnist", {}), ("cifar10", {}), (CM, {"image_size": 32})]:
    p = json.load(open("baselines/airbench_cifar10_half.json")); p.pop("_comment"); p.update(dataset=ds, tta="none", **extra)
    cfg = resolve(p)
    d = D.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, "../shared/data", with_test=False, options=FolderOptions.of(cfg))
    out = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = build_model(cfg, d.info.shape, len(d.info.classes)); m.init_whitening(d.train_x[:5000])
        worst = []
        def hook(mod, inp, o, worst=worst):
            x = inp[0].float().transpose(0, 1).flatten(1)
            levels = x.std(1) / (x.mean(1).abs() * 2 ** -8 + 1e-30)
            worst.append(levels.min().item())
        hs = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
        with torch.no_grad(): m(d.train_x[torch.randperm(len(d.train_x))[:1024]])
        out.append(f"{min(worst):.3g}")
    print(ds[-10:], "min bf16 levels per std over BN inputs:", out, flush=True)
