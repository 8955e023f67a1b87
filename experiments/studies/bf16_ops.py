"""Is each op of the `nas` space right, and is it slower, in bfloat16 autocast on this CPU?

    python -m experiments.studies.bf16_ops                       # the ops at 16 ch. on 32x32 and 64 ch. on 16x16 maps
    python -m experiments.studies.bf16_ops --sizes 16x32 --ops dil_conv_3x3 conv_3x3 --json ops.json
    python -m experiments.studies.bf16_ops --smoke               # tiny maps, one timing repeat: a few seconds

Each op of trial.nas_space.OPS (as a chosen network builds it: trial.nas_space.FixedChoices) runs forward and backward
on the same input and weights, channels-last as the harness runs them, once in float32 and once under CPU bfloat16
autocast. Printed per op and size: the relative error (norm of the difference over the norm of the float32 value) of
the output, of the input's gradient and of the worst weight gradient, and the seconds of a forward + backward pass in
each precision (the median of --repeats; their ratio: above 1 the op is slower in bfloat16). An op whose error
exceeds --suspect (0.5: a wrong result, not rounding) is flagged; the exit status is 1 when one is.

Why it exists: torch 2.14.1's CPU bfloat16 kernel gave a wrong weight gradient (relative error 1.2-1.8) for a
depthwise conv with dilation 2 on 32x32 channels-last maps, which kept a CIFAR-10 network at chance accuracy; the
`dil_conv` ops now run that conv in float32 under CPU autocast (trial.nas_space.Float32DilatedConv2d). Rerun this
after a torch upgrade or on a new CPU (findings: results/cifar10-nas-comparison/README.md). Where the CPU lacks
bfloat16 instructions (trial.train.bf16_supported is False) autocast is emulated: errors still mean what they mean,
times do not.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

SUSPECT = 0.5          # relative error above which a result is wrong, not rounded (bfloat16 rounding gives <= 0.1)
SIZES = ((16, 32), (64, 16))   # (channels, map side): stage 1 of a CIFAR-10 network, and a reduced stage


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm of a - b over the norm of b (b the float32 reference)."""
    a, b = a.float(), b.float()
    return ((a - b).norm() / (b.norm() + 1e-12)).item()


def _pass(op: nn.Module, x: torch.Tensor, amp: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One forward and backward pass: (output, input gradient, weight gradients). The loss weighs each output element
    differently, so that no gradient is the trivial all-ones one."""
    op.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        y = op(xi)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = [p.grad.float() if p.grad is not None else torch.zeros_like(p) for p in op.parameters()]
    return y.detach().float(), xi.grad.float(), grads


def _seconds(op: nn.Module, x: torch.Tensor, amp: bool, repeats: int) -> float:
    _pass(op, x, amp)   # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _pass(op, x, amp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_op(name: str, op: nn.Module, channels: int, side: int, batch: int = 8, repeats: int = 3,
             suspect: float = SUSPECT) -> dict:
    """One row: bfloat16 autocast against float32 for `op` (a module taking [batch, channels, side, side]). Errors are
    relative (see rel_error); `*_seconds` the median forward + backward time; `suspect` True when an error exceeds
    `suspect` or the bfloat16 output is not finite."""
    op = op.to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, channels, side, side).to(memory_format=torch.channels_last)
    ref, low = _pass(op, x, False), _pass(op, x, True)
    weight = max((rel_error(a, b) for a, b in zip(low[2], ref[2])), default=0.0)
    row = {"op": name, "channels": channels, "side": side, "batch": batch,
           "output_error": rel_error(low[0], ref[0]), "input_grad_error": rel_error(low[1], ref[1]),
           "weight_grad_error": weight, "bf16_output_finite": bool(torch.isfinite(low[0]).all())}
    if repeats:
        row["fp32_seconds"] = _seconds(op, x, False, repeats)
        row["bf16_seconds"] = _seconds(op, x, True, repeats)
        row["bf16_over_fp32_time"] = row["bf16_seconds"] / max(row["fp32_seconds"], 1e-12)
    errors = (row["output_error"], row["input_grad_error"], weight)
    row["suspect"] = not row["bf16_output_finite"] or any(e != e or e > suspect for e in errors)
    return row


def nas_ops(names: Sequence[str] | None = None) -> dict[str, Callable[[int], nn.Module]]:
    """name -> builder(channels) for the ops of the nas space as a chosen network builds them (`zero` left out: it
    has nothing to compare). KeyError naming the accepted ops for an unknown name."""
    from trial.nas_space import OPS, FixedChoices
    known = [n for n in OPS if n != "zero"]
    for n in names or ():
        if n not in known:
            raise KeyError(f"unknown op {n!r}; accepted: {', '.join(known)}")
    return {n: (lambda c, n=n: OPS[n](FixedChoices.layers, c)) for n in (names or known)}


def run(ops: dict[str, Callable[[int], nn.Module]], sizes=SIZES, batch: int = 8, repeats: int = 3,
        suspect: float = SUSPECT, seed: int = 0, log=print) -> list[dict]:
    """A row (check_op) per op and (channels, side) size, printed as it comes."""
    rows = []
    for channels, side in sizes:
        for name, build in ops.items():
            torch.manual_seed(seed)
            row = check_op(name, build(channels), channels, side, batch, repeats, suspect)
            rows.append(row)
            log(format_row(row))
    return rows


def format_row(r: dict) -> str:
    text = (f"{r['op']:<14} c={r['channels']:<3} {r['side']}x{r['side']}: rel. error output {r['output_error']:.3g}, "
            f"input grad {r['input_grad_error']:.3g}, weight grad (worst) {r['weight_grad_error']:.3g}")
    if "bf16_seconds" in r:
        text += (f"; fwd+bwd {1000 * r['fp32_seconds']:.1f} ms fp32, {1000 * r['bf16_seconds']:.1f} ms bf16 "
                 f"({r['bf16_over_fp32_time']:.2f}x)")
    return text + ("  SUSPECT" if r["suspect"] else "")


def _size(text: str) -> tuple[int, int]:
    try:
        channels, side = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected CHANNELSxSIDE, e.g. 16x32") from None
    return channels, side


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", nargs="+", help="ops of trial.nas_space.OPS (default: all but zero)")
    p.add_argument("--sizes", nargs="+", type=_size, help="CHANNELSxSIDE, default 16x32 64x16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per op and precision (0: no timing)")
    p.add_argument("--suspect", type=float, default=SUSPECT, help="relative error that flags an op")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="4 channels on 8x8 maps, batch 2, one timed pass")
    p.add_argument("--json", help="write the rows and the machine here")
    a = p.parse_args(argv)
    from trial.train import bf16_supported
    torch.set_num_threads(a.threads)
    try:
        ops = nas_ops(a.ops)
    except KeyError as err:
        p.error(err.args[0])
    sizes, batch, repeats = (a.sizes or SIZES), a.batch, a.repeats
    if a.smoke:
        sizes, batch, repeats = [(4, 8)], 2, 1
    native = bf16_supported(torch.device("cpu"))
    print(f"torch {torch.__version__}, {a.threads} thread(s), CPU bfloat16 instructions: {native}", flush=True)
    rows = run(ops, sizes, batch, repeats, a.suspect, log=lambda s: print(s, flush=True))
    bad = [f"{r['op']} ({r['channels']}x{r['side']}x{r['side']})" for r in rows if r["suspect"]]
    print(f"suspect: {', '.join(bad)}" if bad else "no op suspect")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"command": "python -m experiments.studies.bf16_ops " + " ".join(sys.argv[1:] if argv is None
                                                                                        else argv),
                       "torch": torch.__version__, "cpu_bf16_instructions": native, "threads": a.threads,
                       "smoke": a.smoke, "rows": rows}, fh, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
