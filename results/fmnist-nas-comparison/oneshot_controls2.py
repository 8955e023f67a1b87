"""Second round of controls for the one-shot failure on Fashion-MNIST (results/fmnist-nas-comparison): nni's
RandomOneShot supernet of the nas space (experiments/nas/space.py) trained on 3,000 training images, batch 64, one
thread, a uniformly drawn live architecture per step (trial.nas_space.sample_arch); prints the mean training loss and
batch accuracy of each window of 25 steps, and seconds. Each mode changes one thing the references do differently:

    PYTHONPATH=. python results/fmnist-nas-comparison/oneshot_controls2.py MODE STEPS
    MODE: random  as the one-shot search trains (Adam 1e-3), the failing case
          fixed   one architecture every step (the case that learns)
          rezero  each cell's output is x + a * cell(x), a learnable scalar per cell starting at 0 (ReZero, Bachlechner
                  et al. 2020, arXiv:2003.04887): an op-independent path through every cell, as SPOS' channel split
                  and ResNet blocks give
          tied    one cell genotype per step for every cell (NAS-Bench-201's space ties it, Dong & Yang 2020,
                  arXiv:2001.00326): 5 op/input choices redrawn instead of up to 45
          sgd     the references' recipe: SGD, momentum 0.9, learning rate 0.05, weight decay 3e-4, gradient norm
                  clipped at 5, label smoothing 0.1 (DARTS' search and SPOS' supernet training)
          all     rezero + tied + sgd
"""
import random
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.strategy import RandomOneShot

import trial.nas_space as ns
from experiments.nas.space import NasSpace
from trial import data as data_mod

mode, steps = sys.argv[1], int(sys.argv[2])
rezero, tied, sgd = mode in ("rezero", "all"), mode in ("tied", "all"), mode in ("sgd", "all")
if rezero:
    _forward = ns.Cell.forward
    ns.Cell.forward = lambda self, x: x + self.alpha * _forward(self, x)
d = data_mod.prepare("fmnist", 1000, 0, torch.device("cpu"), 3000, "../shared/data", with_test=False)
torch.manual_seed(0)
sup = RandomOneShot().mutate_model(NasSpace((1, 28, 28), 10))
if rezero:
    for m in sup.modules():
        if isinstance(m, ns.Cell):
            m.alpha = nn.Parameter(torch.zeros(()))
if sgd:
    opt = torch.optim.SGD(sup.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
else:
    opt = torch.optim.Adam(sup.parameters(), lr=1e-3)
rng = random.Random(0)
fixed = ns.sample_arch(random.Random(1))


def draw():
    if mode == "fixed":
        return fixed
    while True:
        arch = ns.sample_arch(rng)
        if tied:
            arch = {k: (arch[f"s1_c1_{k.split('_', 2)[2]}"] if (ns.is_op(k) or ns.is_input(k)) else v)
                    for k, v in arch.items()}
        try:
            ns.check_arch(arch)   # refuses a dead cell (a tied genotype can make one)
            return arch
        except ns.ArchError:
            continue


sup.train()
t, losses, accs = time.time(), [], []
for step in range(steps):
    memo = dict(draw())
    for m in sup.modules():
        if isinstance(m, BaseSuperNetModule):
            memo.update(m.resample(memo=memo))
    idx = torch.randint(0, len(d.train_x), (64,))
    out = sup(d.train_x[idx])
    loss = F.cross_entropy(out, d.train_y[idx], label_smoothing=0.1 if sgd else 0.0)
    opt.zero_grad()
    loss.backward()
    if sgd:
        nn.utils.clip_grad_norm_(sup.parameters(), 5.0)
    opt.step()
    losses.append(F.cross_entropy(out.detach(), d.train_y[idx]).item())
    accs.append((out.argmax(1) == d.train_y[idx]).float().mean().item())
    if (step + 1) % 25 == 0:
        print(mode, step + 1, round(sum(losses[-25:]) / 25, 3), round(sum(accs[-25:]) / 25, 3),
              f"{time.time() - t:.0f}s", flush=True)
if rezero:   # whether the cells are used: the gates' values after training
    gates = [m.alpha.item() for m in sup.modules() if isinstance(m, ns.Cell)]
    print(mode, "cell gates a:", " ".join(f"{a:+.2f}" for a in gates), flush=True)
