"""How does training speed scale with width on this machine? A network at several `width_mult` values, side by side
in one run: images per second of training steps, and the minutes that many epochs would take.

    python -m experiments.studies.width_speed                                  # airbench94 at 0.5, 0.75, 1; float32
    python -m experiments.studies.width_speed --bf16 --json widths.json        # under bfloat16 autocast
    python -m experiments.studies.width_speed --params baselines/resnet.json --widths 1 2 --epochs 12 --images 60000
    python -m experiments.studies.width_speed --smoke                          # two tiny widths, one step: seconds

Each width builds the params file's network (trial.model.build_model, channels-last) and times --steps SGD steps of
--batch random images of the dataset's shape after --warmup steps. Training steps only: no data loading,
augmentation or evaluation, which trial.train adds, so a real run is slower; the ratios between widths are the
result. The widths alternate in rounds (--rounds) so that load which drifts during the run slows them alike; each
width's rate is the median over the rounds. This decided the retraining width of the CIFAR-10 search on a CPU without
bfloat16 instructions (results/cifar10-qnwj4uei/README.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from trial import REPO

DEFAULT_PARAMS = str(REPO / "baselines" / "airbench_cifar10.json")


def step_rate(model: torch.nn.Module, shape: tuple[int, int, int], batch: int, steps: int, warmup: int,
              amp: bool) -> float:
    """Images per second of `steps` SGD steps (cross-entropy on random images and labels) after `warmup` untimed
    ones."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def measure(params: dict, widths, batch: int = 512, steps: int = 3, warmup: int = 2, rounds: int = 1,
            amp: bool = False, epochs: int = 10, images: int = 50000, log=print) -> list[dict]:
    """A row per width: width_mult, parameters, images_per_s (median over rounds), minutes for `epochs` epochs of
    `images` images at that rate, and the rate relative to the first width."""
    from trial import data as data_mod
    from trial.config import resolve
    from trial.model import build_model, count_parameters
    models = {}
    for w in widths:
        cfg = resolve(params, {"width_mult": w})
        models[w] = build_model(cfg, data_mod.INFO[cfg.dataset].shape).to(memory_format=torch.channels_last)
    shape = data_mod.INFO[cfg.dataset].shape
    rates: dict[float, list[float]] = {w: [] for w in widths}
    for _ in range(rounds):
        for w in widths:
            rates[w].append(step_rate(models[w], shape, batch, steps, warmup, amp))
    rows = []
    for w in widths:
        ips = statistics.median(rates[w])
        rows.append({"width_mult": w, "params": count_parameters(models[w]), "images_per_s": ips,
                     "rounds": rates[w], "minutes": epochs * images / ips / 60,
                     "relative_speed": ips / statistics.median(rates[widths[0]])})
        log(f"width {w}: {count_parameters(models[w]):,} parameters, {ips:.0f} img/s train, {epochs} epochs of "
            f"{images:,} = {rows[-1]['minutes']:.1f} min ({rows[-1]['relative_speed']:.2f}x width {widths[0]})")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default=DEFAULT_PARAMS, help="a params file (default: airbench94, CIFAR-10)")
    p.add_argument("--widths", nargs="+", type=float, default=[0.5, 0.75, 1.0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=3, help="timed steps per width and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (pays only with CPU bfloat16 instructions)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10, help="for the minutes column")
    p.add_argument("--images", type=int, default=50000, help="images per epoch, for the minutes column")
    p.add_argument("--smoke", action="store_true", help="widths 0.125 and 0.25, batch 8, one step, no warm-up")
    p.add_argument("--json")
    a = p.parse_args(argv)
    from trial.config import load_params_file
    from trial.train import bf16_supported
    torch.set_num_threads(a.threads)
    widths, batch, steps, warmup = a.widths, a.batch, a.steps, a.warmup
    if a.smoke:
        widths, batch, steps, warmup = [0.125, 0.25], 8, 1, 0
    native = bf16_supported(torch.device("cpu"))
    print(f"torch {torch.__version__}, {a.threads} thread(s), {'bfloat16 autocast' if a.bf16 else 'float32'}, "
          f"CPU bfloat16 instructions: {native}", flush=True)
    rows = measure(load_params_file(a.params), widths, batch, steps, warmup, a.rounds, a.bf16, a.epochs, a.images,
                   log=lambda s: print(s, flush=True))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"command": "python -m experiments.studies.width_speed " + " ".join(sys.argv[1:] if argv is None
                                                                                           else argv),
                       "params_file": a.params, "batch": batch, "bf16": a.bf16, "threads": a.threads,
                       "cpu_bf16_instructions": native, "torch": torch.__version__, "smoke": a.smoke, "rows": rows},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
