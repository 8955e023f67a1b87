"""Speed and memory, measured side by side in one run: ratios, not absolute times, are the result.

    python -m experiments.benchmark --quick --json bench.json      # this 2-core CPU, a few minutes (alias of
                                                                   # experiments.studies.benchmark)
    python -m experiments.benchmark --json bench.json              # a GPU box (no NNI needed there)
    python -m experiments.benchmark --quick --compile ...          # also the harness through torch.compile

Measures, on the same model, batch size and device:
  - training throughput (images/s, augmentation on) of the harness's epoch loop vs a minimal hand-written loop over
    in-memory tensors (the ceiling) vs the conventional pipeline (torchvision dataset + ToTensor/Normalize + per-image
    augmentation transforms + DataLoader), for a Fashion-MNIST CNN and a CIFAR-10 CNN; the three alternate in rounds
    so that a noisy machine slows them alike, and each ratio is the median of the per-round ratios (paired_ratio);
  - time from process start to the first training step of a trial (`python -m trial`), cold and warm data cache;
  - NNI's overhead per trial in a real local experiment of short trials (skipped where nni is absent);
  - the epochs a Hyperband iteration saves because promoted configurations resume (trial/resume.py): from the
    schedule of the shipped study (R=9, eta=3), and measured on a real small iteration;
  - per network family (plain CNN, ResNet-20, airbench94 at half width): the harness's images/s against the bare loop
    over the same model, and the validation accuracy a short run reaches per CPU-minute;
  - peak memory (RSS; GPU memory on a GPU).
The JSON (--json) holds harness_vs_bare, harness_vs_dataloader (the lower of the two datasets' ratios),
trial_start_warm_s, trial_start_cold_s, nni_overhead_s_per_trial, hyperband_epochs_saved_frac and device, plus detail.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T

from trial import REPO
from trial import data as data_mod
from trial.augment import augment, training_transform
from trial.averaging import weight_average
from trial.config import load_params_file, resolve
from trial.model import build_model, count_parameters
from trial.networks import AirbenchNet
from trial.optim import LOSSES, OPTIMIZERS, SCHEDULES, param_groups
from trial.train import WHITENING_IMAGES, batches, bf16_supported, pick_device, steps_per_epoch, train, train_epoch

from ..launch import local
from ..tuners import fixed_hyperband, hyperband_resume_saving, hyperband_trials

MODEL = {"conv_layers": 2, "filters_1": 32, "filters_2": 64, "dense_units": 128, "dropout": 0.25,
         "augment": True, "batch_size": 128, "lr_schedule": "constant"}
# one representative per network family: the plain CNN above, ResNet-20, airbench94 at half width
FAMILY_MODELS = {"plain": MODEL, "residual": load_params_file(str(REPO / "baselines" / "resnet.json")),
                 "airbench": {**load_params_file(str(REPO / "baselines" / "airbench_cifar10.json")), "width_mult": 0.5}}


# ---------------------------------------------------------------------------------------------------- throughput
def _setup(dataset: str, n: int, device: torch.device, params: dict = MODEL):
    cfg = resolve(params, {"dataset": dataset, "train_subset": n, "val_size": 100})   # validation is not timed
    d = data_mod.prepare(dataset, cfg.val_size, cfg.split_seed, device, n, with_test=False)
    torch.manual_seed(0)
    # the same model, layout and precision as a trial gets, in all three pipelines: only the data path differs
    model = build_model(cfg, d.info.shape).to(device, memory_format=torch.channels_last)
    if isinstance(model, AirbenchNet):   # as trial.train does
        model.init_whitening(d.train_x[:WHITENING_IMAGES])
    return cfg, d, model, OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _harness_epoch(cfg, d, net, opt) -> None:
    """One epoch of trial.train.train_epoch, exactly as a trial runs it (schedule, augmentation, weight average)."""
    steps = steps_per_epoch(len(d.train_x), cfg.batch_size)
    schedule = SCHEDULES[cfg.lr_schedule](opt, cfg, steps)
    train_epoch(net, opt, schedule, LOSSES[cfg.loss](cfg),
                batches(d.train_x, d.train_y, cfg.batch_size, training_transform(cfg, d.info)),
                bf16_supported(d.train_x.device), average=weight_average(net, cfg, steps))


def harness_run(dataset, n, device, params: dict = MODEL) -> float:
    """Images/s of the harness's own epoch loop."""
    cfg, d, model, opt = _setup(dataset, n, device, params)
    t0 = time.perf_counter()
    _harness_epoch(cfg, d, model, opt)
    _sync(device)
    return len(d.train_x) / (time.perf_counter() - t0)


def bare_run(dataset, n, device, params: dict = MODEL) -> float:
    """The ceiling: the least code that trains this model on in-memory tensors with the same augmentation."""
    cfg, d, model, opt = _setup(dataset, n, device, params)
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(len(d.train_x), device=device)
    for i in range(0, len(perm), cfg.batch_size):
        idx = perm[i:i + cfg.batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_supported(device)):
            images = augment(d.train_x[idx], d.info, cfg.crop_pad, cfg.augmentation)
            loss = torch.nn.functional.cross_entropy(model(images).float(), d.train_y[idx],
                                                     label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return len(d.train_x) / (time.perf_counter() - t0)


_COMPILED: dict = {}


def compiled_run(dataset, n, device) -> float:
    """The harness's epoch loop through torch.compile (`--compile true`). Compiled once per dataset, outside the
    timing, on a warm-up slice: the compile time is reported apart (`compile_s`), the rounds time steady state."""
    if dataset not in _COMPILED:
        cfg, d, model, opt = _setup(dataset, n, device)
        cmodel = torch.compile(model)
        t0 = time.perf_counter()
        k = 2 * cfg.batch_size
        warm = data_mod.DeviceData(d.train_x[:k], d.train_y[:k], d.val_x, d.val_y, d.test_x, d.test_y, d.info)
        _harness_epoch(cfg, warm, cmodel, opt)
        _sync(device)
        _COMPILED[dataset] = (cfg, d, cmodel, opt, time.perf_counter() - t0)
    cfg, d, cmodel, opt, _ = _COMPILED[dataset]
    t0 = time.perf_counter()
    _harness_epoch(cfg, d, cmodel, opt)
    _sync(device)
    return len(d.train_x) / (time.perf_counter() - t0)


# the conventional equivalents of trial/augment.py's kinds, per image on PIL images
TORCHVISION_AUGMENTATIONS = {
    "crop_flip": [T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()],
    "affine": [T.RandomAffine(10, translate=(2 / 28, 2 / 28), scale=(0.9, 1.1))],
}


class _TensorImages(torch.utils.data.Dataset):
    """torchvision's MNIST/CIFAR10 datasets, minus their file parsing: a PIL image per item, then the transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        from PIL import Image
        self.x, self.y, self.transform, self.image = x.numpy(), y.numpy(), transform, Image.fromarray

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        a = self.x[i]
        img = self.image(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
        return self.transform(img), int(self.y[i])


def dataloader_run(dataset, n, device, workers: int) -> float:
    """The conventional pipeline: per-image PIL transforms (augment, ToTensor, Normalize) and a DataLoader."""
    cfg, _, model, opt = _setup(dataset, n, device)
    info = data_mod.INFO[dataset]
    s = data_mod.load(dataset)
    tf = T.Compose(TORCHVISION_AUGMENTATIONS[info.augmentation] + [T.ToTensor(), T.Normalize(info.mean, info.std)])
    ds = _TensorImages(s.train_x[:n], s.train_y[:n], tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_supported(device)):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return n / (time.perf_counter() - t0)


def throughput(dataset: str, n: int, rounds: int, device, workers: int, compiled: bool = False) -> dict:
    fns = {"harness": harness_run, "bare": bare_run,
           "dataloader": lambda ds, k, dev: dataloader_run(ds, k, dev, workers)}
    if compiled:
        fns["compiled"] = compiled_run
        compiled_run(dataset, n, device)           # compiles (timed apart) and runs once
    runs = {name: [] for name in fns}
    harness_run(dataset, min(n, 2048), device)     # warm-up: allocator, cudnn autotuning, first-call costs
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            runs[name].append(fns[name](dataset, n, device))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    return {"images_per_s": med, "runs": runs, "harness_vs_bare": paired_ratio(runs["harness"], runs["bare"]),
            "harness_vs_dataloader": paired_ratio(runs["harness"], runs["dataloader"]), "images": n,
            "rounds": rounds, "dataloader_workers": workers,
            **({"compiled_vs_harness": paired_ratio(runs["compiled"], runs["harness"]),
                "compile_s": _COMPILED[dataset][-1]} if compiled else {})}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a[i] / b[i]: two rates measured back to back in the same round share that round's
    machine load, so their ratio cancels what drifts between rounds (another process, turbo, the page cache), which
    a ratio of the two medians does not. ValueError when the lists differ in length or are empty."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio needs two equally long, non-empty lists of rates, got {len(a)} and {len(b)}")
    return float(np.median(np.asarray(a, dtype=float) / np.asarray(b, dtype=float)))


def family_study(dataset: str, n: int, rounds: int, device, epochs: int) -> dict:
    """Per network family (FAMILY_MODELS): the harness's images/s against the bare loop over the same model, batch
    and augmentation (alternating rounds; the median of the per-round ratios), and a short training run's validation accuracy per CPU-minute
    (`epochs` epochs on `n` images, validated on 2,000; CPU time of this process, all threads)."""
    out = {}
    for family, params in FAMILY_MODELS.items():
        harness_run(dataset, min(n, 1024), device, params)     # warm-up
        runs = {"harness": [], "bare": []}
        for r in range(rounds):
            for name in (["harness", "bare"] if r % 2 == 0 else ["bare", "harness"]):
                runs[name].append((harness_run if name == "harness" else bare_run)(dataset, n, device, params))
        med = {k: float(np.median(v)) for k, v in runs.items()}
        val_size = min(2000, len(data_mod.load(dataset).train_x) - n)   # tests' tiny datasets hold fewer
        cfg = resolve(params, {"dataset": dataset, "train_subset": n, "val_size": val_size, "epochs": epochs,
                               "eval_test": False, "keep": "last"})
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = train(cfg)
        cpu_minutes = (time.process_time() - cpu0) / 60
        accuracy = result.history[-1]["default"]
        out[family] = {"images_per_s": med, "runs": runs, "harness_vs_bare": paired_ratio(runs["harness"], runs["bare"]),
                       "params": count_parameters(result.model), "val_accuracy": accuracy, "epochs": epochs,
                       "images": n, "cpu_minutes": cpu_minutes, "wall_minutes": (time.perf_counter() - wall0) / 60,
                       "val_accuracy_per_cpu_minute": accuracy / cpu_minutes}
    return out


# ---------------------------------------------------------------------------------------------------- trial start
def trial_start(dataset: str, cache: Path, repeats: int) -> dict:
    """Seconds from process start to the first training step of `python -m trial` (from its final.json)."""
    env = {**os.environ, "CNNSEARCH_CACHE": str(cache)}
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "trial", "--dataset", dataset, "--epochs", "1", "--train_subset", "256",
                   "--val_size", "256", "--eval_test", "false", "--output-dir", out]
            done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"trial failed: {done.stderr[-2000:]}")
            times.append(json.loads((Path(out) / "final.json").read_text())["startup_seconds"])
    return {"seconds": times, "median": float(np.median(times))}


# ---------------------------------------------------------------------------------------------------- NNI overhead
def _has_nni() -> bool:
    try:
        import nni  # noqa: F401
        return True
    except ImportError:
        return False


def nni_overhead(trials: int, concurrency: int = 2) -> dict:
    """A real local experiment of short trials: the gap from one trial's end to the next one's start, and the
    experiment's wall time against the sum of trial times."""
    with tempfile.TemporaryDirectory() as work:
        _, wall, table = local.run(
            "benchmark-overhead", "python -m trial --dataset fmnist --epochs 1 --train_subset 128 --val_size 128 "
            "--eval_test false --threads 1", {"seed": {"_type": "randint", "_value": [0, 1000000]}},
            {"name": "Random"}, work, trials, concurrency)
    starts = np.sort(table["start_ms"].to_numpy(float)) / 1000
    ends = np.sort(table["end_ms"].to_numpy(float)) / 1000
    # with `concurrency` slots, trial k + concurrency starts in the slot trial k freed
    gaps = [s - e for s, e in zip(starts[concurrency:], ends[:len(starts) - concurrency])]
    busy = float((table["end_ms"] - table["start_ms"]).sum() / 1000)
    return {"trials": trials, "concurrency": concurrency, "gap_s_median": float(np.median(gaps)), "gaps_s": gaps,
            "wall_s": wall, "sum_trial_s": busy, "ideal_wall_s": busy / concurrency,
            "overhead_s_per_trial": float(np.median(gaps))}


def hyperband_saving_measured(R: int = 3, eta: int = 3) -> dict:
    """A real FixedHyperband iteration (R=3, eta=3: 6 trials): epochs the promoted trials did not train again."""
    with tempfile.TemporaryDirectory() as work:
        _, _, table = local.run(
            "benchmark-hyperband", "python -m trial --dataset fmnist --train_subset 512 --val_size 256 "
            "--eval_test false --threads 1", {"learning_rate": {"_type": "loguniform", "_value": [1e-3, 1e-2]}},
            fixed_hyperband(R, eta), work, hyperband_trials(R, eta))
    run = table["final_epochs_run"].fillna(0).sum()
    reused = table["final_resumed_from_epoch"].fillna(0).sum()
    return {"R": R, "eta": eta, "trials": len(table), "epochs_budgeted": float(run), "epochs_reused": float(reused),
            "saved_frac": float(reused / run) if run else 0.0, "expected_frac": hyperband_resume_saving(R, eta)}


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a 2-core CPU")
    p.add_argument("--json", default="benchmark.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-nni", action="store_true", help="leave out the NNI experiment (no nni installed)")
    p.add_argument("--images", type=int, help="images per throughput run (default 4096 quick, 30000 full)")
    p.add_argument("--nni-trials", type=int, help="trials in the overhead experiment (default 8 quick, 12 full)")
    p.add_argument("--compile", action="store_true", help="also time the harness through torch.compile")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    n, rounds, workers = (4096, 5, 1) if args.quick else (30000, 3, min(8, os.cpu_count() or 1))
    n = args.images or n
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
              "bf16_autocast": bf16_supported(device),
              "torch": str(torch.__version__), "python": platform.python_version(), "quick": args.quick}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    tp = {ds: throughput(ds, n, rounds, device, workers, args.compile) for ds in ("fmnist", "cifar10")}
    result["throughput"] = tp
    result["harness_vs_bare"] = min(t["harness_vs_bare"] for t in tp.values())
    result["harness_vs_dataloader"] = min(t["harness_vs_dataloader"] for t in tp.values())
    result["families"] = {ds: family_study(ds, n, 3, device, 2) for ds in ("fmnist", "cifar10")}
    result["family_harness_vs_bare"] = min(f["harness_vs_bare"] for fams in result["families"].values()
                                           for f in fams.values())
    with tempfile.TemporaryDirectory() as cold:
        cold_runs = []
        for i in range(2 if args.quick else 3):   # each in a fresh cache: decoding included
            cold_runs.append(trial_start("fmnist", Path(cold) / str(i), 1)["median"])
        result["trial_start_cold_s"] = float(np.median(cold_runs))
        result["trial_start_warm_s"] = trial_start("fmnist", Path(cold) / "0", 3)["median"]
    use_nni = not args.skip_nni and _has_nni()
    overhead = nni_overhead(args.nni_trials or (8 if args.quick else 12)) if use_nni else None
    result["nni"] = overhead
    result["nni_overhead_s_per_trial"] = overhead["overhead_s_per_trial"] if overhead else float("nan")
    # the saving of one full iteration of the shipped study (R = 9, eta = 3), from the schedule; measured below on
    # a real small iteration, where every promotion must resume for the two to agree
    result["hyperband_epochs_saved_frac"] = hyperband_resume_saving(9, 3)
    result["hyperband"] = hyperband_saving_measured() if use_nni else None
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"device: {result['device']}")
    print(f"{'dataset':<9} {'harness img/s':>14} {'bare img/s':>11} {'loader img/s':>13} {'vs bare':>8} {'vs loader':>10}")
    for ds, t in tp.items():
        m = t["images_per_s"]
        print(f"{ds:<9} {m['harness']:>14.0f} {m['bare']:>11.0f} {m['dataloader']:>13.0f} "
              f"{t['harness_vs_bare']:>8.2f} {t['harness_vs_dataloader']:>10.2f}")
    print(f"{'dataset':<9} {'family':<9} {'params':>9} {'harness img/s':>14} {'bare img/s':>11} {'vs bare':>8} "
          f"{'val acc':>8} {'CPU min':>8} {'acc/CPU-min':>12}")
    for ds, fams in result["families"].items():
        for family, f in fams.items():
            m = f["images_per_s"]
            print(f"{ds:<9} {family:<9} {f['params']:>9,} {m['harness']:>14.0f} {m['bare']:>11.0f} "
                  f"{f['harness_vs_bare']:>8.2f} {f['val_accuracy']:>8.4f} {f['cpu_minutes']:>8.2f} "
                  f"{f['val_accuracy_per_cpu_minute']:>12.3f}")
    if args.compile:
        print("torch.compile: " + ", ".join(f"{ds} {t['compiled_vs_harness']:.2f}x the eager harness (compiling took "
                                             f"{t['compile_s']:.0f} s)" for ds, t in tp.items()))
    print(f"trial start to first step: warm {result['trial_start_warm_s']:.2f} s, cold {result['trial_start_cold_s']:.2f} s")
    if overhead:
        print(f"NNI: {overhead['overhead_s_per_trial']:.2f} s between a trial's end and the next start "
              f"(concurrency {overhead['concurrency']}); wall {overhead['wall_s']:.0f} s vs "
              f"{overhead['ideal_wall_s']:.0f} s of trial time per slot")
    if result["hyperband"]:
        h = result["hyperband"]
        print(f"Hyperband R={h['R']} eta={h['eta']}: {h['epochs_reused']:.0f} of {h['epochs_budgeted']:.0f} epochs "
              f"reused by resuming promotions ({h['saved_frac']:.1%}; schedule says {h['expected_frac']:.1%}); "
              f"R=9 eta=3: {result['hyperband_epochs_saved_frac']:.1%}")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB" + (f", GPU {result['peak_gpu_mb']:.0f} MB"
                                                        if "peak_gpu_mb" in result else ""))
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
