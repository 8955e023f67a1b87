"""Diagnostic of results/bf16-chance (README.md there); run from the repository root with PYTHONPATH=.; not part of the product."""
# diagnostic: airbench half on Chinese MNIST; per epoch val acc in eval mode vs train-mode BN, min running_var
import json
import sys

import torch

from trial import train as T
from trial.config import resolve

seed = int(sys.argv[1]); epochs = int(sys.argv[2]); extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
p = json.load(open("baselines/airbench_cifar10_half.json")); p.pop("_comment")
p.update(dataset="/work/data/chinese_mnist/backend/ml_model/data/raw/manifest.csv", image_size=32, seed=seed,
         epochs=epochs, threads=2, tta="none", **extra)
cfg = resolve(p)
def rep(m): print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}, flush=True)
res = T.train(cfg, rep)
model = res.model
for n, mod in model.named_modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        rv = mod.running_var
        print(n, f"running_var min {rv.min():.3g} median {rv.median():.3g}  zero-ish {int((rv < 1e-6).sum())}/{rv.numel()}")
print("whiten weight absmax", model.whiten.weight.abs().max().item())
