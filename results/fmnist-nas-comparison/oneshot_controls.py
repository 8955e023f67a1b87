"""Controls for the one-shot failure on Fashion-MNIST (results/fmnist-nas-comparison): nni's RandomOneShot supernet of
the nas space (experiments/nas/space.py), trained with plain Adam (1e-3, batch 64, one thread) on 3,000 training
images, the path fixed or partly redrawn each step; prints step, loss, batch accuracy, seconds.

    PYTHONPATH=. python results/fmnist-nas-comparison/oneshot_controls.py MODE STEPS [cellnorm]
    MODE: fixed (one architecture), random (every label redrawn), ops (ops and inputs), oponly, inonly,
          shape (widths and depths), nozero (every label, no zero op), convonly (ops among the 6 convs),
          conv3 (ops among conv 3x3 and 5x5); cellnorm: each cell's output batch-normalised (no parameters)
"""
import random
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.strategy import RandomOneShot

import trial.nas_space as ns
from experiments.nas.space import NasSpace
from trial import data as data_mod
from trial.nas_space import sample_arch

if len(sys.argv) > 3 and sys.argv[3] == "cellnorm":
    _fwd = ns.Cell.forward
    ns.Cell.forward = lambda self, x: F.batch_norm(_fwd(self, x), None, None, training=True)
d = data_mod.prepare("fmnist", 1000, 0, torch.device("cpu"), 3000, "../shared/data", with_test=False)
mode = sys.argv[1]
torch.manual_seed(0)
space = NasSpace((1, 28, 28), 10)
sup = RandomOneShot().mutate_model(space)
opt = torch.optim.Adam(sup.parameters(), lr=1e-3)
fixed = sample_arch(random.Random(1))
rng = random.Random(0)
sup.train()
t = time.time()
for step in range(int(sys.argv[2])):
    arch = fixed if mode == "fixed" else sample_arch(rng)
    if mode == "ops":
        arch = {k: (arch[k] if ("_op" in k or "_in" in k) else fixed[k]) for k in fixed}
    if mode == "oponly":
        arch = {k: (arch[k] if "_op" in k else fixed[k]) for k in fixed}
    if mode == "inonly":
        arch = {k: (arch[k] if "_in" in k else fixed[k]) for k in fixed}
    if mode == "nozero":
        while any(v == "zero" for k, v in arch.items() if "_op" in k):
            arch = {k: (rng.choice([o for o in ("conv_3x3","conv_5x5","sep_conv_3x3","sep_conv_5x5","dil_conv_3x3","dil_conv_5x5","max_pool_3x3","avg_pool_3x3","skip_connect")]) if "_op" in k and v == "zero" else v) for k, v in arch.items()}
    if mode == "convonly":
        convs = ["conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
        arch = {k: (rng.choice(convs) if "_op" in k else fixed[k]) for k in fixed}
    if mode == "conv3":
        arch = {k: (rng.choice(["conv_3x3", "conv_5x5"]) if "_op" in k else fixed[k]) for k in fixed}
    if mode == "shape":
        arch = {k: (arch[k] if ("width" in k or "depth" in k) else fixed[k]) for k in fixed}
    memo = dict(arch)
    for m in sup.modules():
        if isinstance(m, BaseSuperNetModule):
            memo.update(m.resample(memo=memo))
    idx = torch.randint(0, len(d.train_x), (64,))
    out = sup(d.train_x[idx]); loss = F.cross_entropy(out, d.train_y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 0:
        print(mode, step, round(loss.item(), 3), round((out.argmax(1) == d.train_y[idx]).float().mean().item(), 3), f"{time.time()-t:.0f}s", flush=True)
