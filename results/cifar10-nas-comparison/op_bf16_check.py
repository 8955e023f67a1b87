"""Each op of the nas space (trial/nas_space.OPS), forward and backward, in bfloat16 autocast against float32 on the
same input and weights (channels-last, as the harness runs them): the relative error of the output, of the input's
gradient and of each weight's gradient (the worst one).

    PYTHONPATH=. python results/cifar10-nas-comparison/op_bf16_check.py

What it found (2026-12-01, 2-core AMD EPYC, avx2 + avx512_bf16, torch 2.14.1, run with trial.nas_space's ops before
the fix, when dil_conv built a plain nn.Conv2d): every op within 0.01 of float32 in its output and within 0.11 in its
gradients, except dil_conv_3x3 and dil_conv_5x5 at 16 channels on 32x32 maps, whose worst weight gradient was off by
4.1 and 1.1 (relative error); at 64 channels on 16x16 they were right. Narrowed down: a depthwise conv with dilation 2,
bfloat16 autocast, 32x32 maps, channels-last input or weight: relative error 1.2-1.8 (dilation 1, 16x16 maps, or both
tensors contiguous: 0.003). The dil_conv ops now run that conv in float32 on the CPU under autocast
(trial.nas_space.Float32DilatedConv2d); rerun after the fix (2026-12-01, same machine), dil_conv's worst weight-gradient error is
0.006-0.008, like conv_3x3's (sep_conv's stays 0.08-0.10, from bfloat16 through its two depthwise units and BN).
"""
import torch

from trial.nas_space import OPS, FixedChoices

torch.manual_seed(0)
torch.set_num_threads(1)
for c, hw in ((16, 32), (64, 16)):
    for name, build in OPS.items():
        if name == "zero":
            continue
        op = build(FixedChoices.layers, c).to(memory_format=torch.channels_last).train()
        x = torch.randn(8, c, hw, hw).to(memory_format=torch.channels_last)
        out = {}
        for amp in (False, True):
            op.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                y = op(xi)
            (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            out[amp] = (y.detach().float(), xi.grad.float(), [p.grad.float() for p in op.parameters()])
        rel = lambda a, b: ((a - b).norm() / (b.norm() + 1e-12)).item()
        err = [rel(out[True][i], out[False][i]) for i in (0, 1)]
        worst = max((rel(a, b) for a, b in zip(out[True][2], out[False][2])), default=0.0)
        print(f"{name:<14} c={c:<3} {hw}x{hw}: output rel. error {err[0]:.3g}, input-gradient rel. error {err[1]:.3g}, "
              f"weight-gradient rel. error (worst) {worst:.3g}, "
              f"bf16 output finite {bool(torch.isfinite(out[True][0]).all())}", flush=True)
