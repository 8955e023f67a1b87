"""Diagnostic of results/bf16-chance (README.md there); run from the repository root with PYTHONPATH=.; not part of the product."""
import json
import sys

import torch
import torch.nn.functional as F

from trial import data as D
from trial.config import resolve
from trial.folder import FolderOptions
from trial.model import build_model

torch.set_num_threads(2)
p = json.load(open("baselines/airbench_cifar10_half.json")); p.pop("_comment")
p.update(dataset="/work/data/chinese_mnist/backend/ml_model/data/raw/manifest.csv", image_size=32, tta="none")
cfg = resolve(p)
d = D.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, None, with_test=False, options=FolderOptions.of(cfg))
mode = sys.argv[1]; lr = float(sys.argv[2]); AMP = sys.argv[3] == "1"
x, y = d.train_x, d.train_y
if mode == "clip": x = x.clamp(max=3)
if mode == "unit":  # undo: map to [0,1]-ish range by min-max
    x = (x - x.min()) / (x.max() - x.min())
torch.manual_seed(0)
m = build_model(cfg, d.info.shape, 15)
m.init_whitening(x[:5000])
opt = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=lr, momentum=0.9, nesterov=True)
for ep in range(2):
    perm = torch.randperm(len(x))
    for i, s in enumerate(range(0, len(x) - 255, 256)):
        idx = perm[s:s+256]
        with torch.autocast("cpu", torch.bfloat16, enabled=AMP):
            out = m(x[idx])
        loss = F.cross_entropy(out.float(), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
        if i % 10 == 0: print(ep, i, round(loss.item(), 3), flush=True)
m.eval()
with torch.no_grad(): print("val acc", (m(d.val_x if mode=="plain" else (d.val_x.clamp(max=3) if mode=="clip" else (d.val_x - d.train_x.min())/(d.train_x.max()-d.train_x.min()))).argmax(1) == d.val_y).float().mean().item())
