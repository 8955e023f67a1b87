"""Training speed of baselines/airbench_cifar10.json at widths 0.5, 0.75 and 1, side by side in one run: 3 timed SGD
steps of batch 512 on random 32x32x3 images after 2 warm-up steps, channels-last, float32, 2 torch threads (what
decided the retraining width of the CIFAR-10 search on a CPU without bfloat16 instructions, qnwj4uei). Training
steps only: no data loading, augmentation or evaluation, which `train()` adds.

    PYTHONPATH=. python results/cifar10-qnwj4uei/width_speed.py
"""
import time

import torch

from trial.config import load_params_file, resolve
from trial.model import build_model

torch.set_num_threads(2)
p = load_params_file("baselines/airbench_cifar10.json")
for w in (0.5, 0.75, 1.0):
    cfg = resolve(p, {"width_mult": w})
    m = build_model(cfg, (3, 32, 32)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(512, 3, 32, 32).to(memory_format=torch.channels_last); y = torch.randint(0, 10, (512,))
    for i in range(5):
        if i == 2: t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    dt = (time.perf_counter() - t) / 3
    ips = 512 / dt
    print(f"width {w}: {ips:.0f} img/s train, 10 epochs of 50k = {500000/ips/60:.1f} min", flush=True)
