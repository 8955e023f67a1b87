"""Training as a plain function of a config: `train(config, report) -> final metrics`. It never imports nni.

The whole split lives in one tensor on the device; each epoch shuffles it with `randperm` and augments batches with
tensor ops. Each epoch calls `report(metrics)` with `default` = validation accuracy. The returned dict holds the best
validation accuracy, the test accuracy of the best-validation weights, epochs run, parameter count and seconds.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from . import resume
from .augment import augment
from .config import TrialConfig
from .model import build_model, count_parameters

Report = Callable[[dict], None]
EVAL_BATCH = 1024


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and the learning rate."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA device; use device 'auto' or 'cpu'")
    return torch.device(name)


@functools.cache
def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast pays here: CUDA GPUs that support it, and CPUs with native bfloat16 instructions
    (AVX512-BF16 or AMX; about 1.5x faster training on such a CPU, and slower where it is emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


OPTIMIZERS = {
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.learning_rate, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.learning_rate, weight_decay=c.weight_decay),
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.learning_rate, momentum=c.momentum, nesterov=c.momentum > 0,
                                        weight_decay=c.weight_decay),
}


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrialConfig, steps_per_epoch: int):
    """Returns (scheduler, steps per call): per-step schedules step each batch, plateau steps each epoch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total), "step"
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=total, pct_start=0.25), "step"
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "max", factor=cfg.lr_factor,
                                                          patience=cfg.lr_patience), "epoch"
    return None, None


def loss_fn(cfg: TrialConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.loss == "mse":   # MSE between softmax outputs and one-hot targets, as in the activation x loss study
        return lambda logits, y: F.mse_loss(logits.float().softmax(1), F.one_hot(y, logits.shape[1]).float())
    return lambda logits, y: F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, amp: bool) -> dict:
    """Loss, accuracy and predictions over a whole split, in eval mode."""
    model.eval()
    total_loss, preds = 0.0, []
    for i in range(0, len(x), EVAL_BATCH):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x[i:i + EVAL_BATCH])
        total_loss += float(loss(logits, y[i:i + EVAL_BATCH])) * len(logits)
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    return {"loss": total_loss / len(x), "accuracy": float((pred == y).float().mean()), "pred": pred}


def train_epoch(model, opt, sched, per_step, d: data_mod.DeviceData, cfg: TrialConfig, loss, amp, fill,
                progress) -> torch.Tensor:
    model.train()
    order = torch.randperm(len(d.train_x), device=d.train_x.device)
    total = torch.zeros((), device=d.train_x.device)
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        x, y = d.train_x[idx], d.train_y[idx]
        if cfg.augment:
            x = augment(x, cfg.dataset, fill)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            batch_loss = loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        if per_step == "step":
            sched.step()
        total += batch_loss.detach() * len(idx)
        if progress is not None:
            progress.update(len(idx))
    return total / len(order)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrialConfig, report: Report | None = None, data: data_mod.DeviceData | None = None,
          output_dir: str | Path | None = None, data_dir: str | None = None, progress: bool = False,
          resume_from: str | Path | None = None) -> dict:
    """Train one model as `cfg` says; call `report` each epoch; return the final metrics.

    With `resume_from` (a file, see trial/resume.py) the run continues from the state saved there by a run of the
    same config with a smaller budget, re-reports those epochs, and saves its own state after every epoch."""
    start = time.perf_counter()
    device = pick_device(cfg.device)
    if cfg.threads:
        # concurrent trials on one CPU: each with every core's worth of threads runs many times slower
        torch.set_num_threads(cfg.threads)
    amp = cfg.amp and bf16_supported(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    d = data or data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, device, cfg.train_subset, data_dir,
                                 with_test=cfg.eval_test)
    # channels-last convolutions are faster on GPUs and on CPUs alike (oneDNN), most of all with bfloat16
    model = build_model(cfg, d.info.shape).to(device, memory_format=torch.channels_last)
    # `net` runs the batches; `model` owns the weights (a compiled wrapper would prefix every state-dict key)
    net = torch.compile(model) if cfg.compile else model
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(d.train_x) / cfg.batch_size)
    sched, per_step = make_scheduler(opt, cfg, steps_per_epoch)
    loss = loss_fn(cfg)
    fill = data_mod.normalise(torch.zeros(1, d.info.shape[0], 1, 1), d.info, device).flatten()
    bar = _progress_bar(cfg.epochs * len(d.train_x)) if progress else None
    startup = time.time() - _process_start()   # imports, data, model: what a trial pays before its first step

    history: list[dict] = []
    best_acc, best_state, best_epoch, stale = -1.0, None, 0, 0
    diverged = None
    saved = resume.load(Path(resume_from), cfg) if resume_from else None
    if saved:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        _restore_schedule(sched, per_step, saved, steps_per_epoch)
        torch.set_rng_state(saved["rng"])
        history, best_acc, best_state, best_epoch, stale = (saved["history"], saved["best_acc"], saved["best_state"],
                                                            saved["best_epoch"], saved["stale"])
        for metrics in history:   # the curve stays whole in the dashboard
            if report is not None:
                report({**metrics, "resumed": 1})
        if bar is not None:
            bar.update(len(history) * len(d.train_x))
    resumed_from = len(history)
    for epoch in range(resumed_from + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = float(train_epoch(net, opt, sched, per_step, d, cfg, loss, amp, fill, bar))
        if not math.isfinite(train_loss):
            diverged = (f"training loss became {train_loss} in epoch {epoch} at learning rate "
                        f"{opt.param_groups[0]['lr']:.3g}; lower learning_rate or turn on batch_norm")
            break
        val = evaluate(net, d.val_x, d.val_y, loss, amp)
        if per_step == "epoch":
            sched.step(val["accuracy"])
        metrics = {"default": val["accuracy"], "val_loss": val["loss"], "train_loss": train_loss,
                   "lr": opt.param_groups[0]["lr"], "epoch": epoch, "epoch_seconds": time.perf_counter() - t0}
        history.append(metrics)
        if bar is not None:
            bar.set_postfix(epoch=epoch, val_acc=f"{val['accuracy']:.4f}", loss=f"{train_loss:.3f}")
        if val["accuracy"] > best_acc:
            best_acc, best_epoch, stale = val["accuracy"], epoch, 0
            if cfg.keep == "best":
                best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if report is not None:
            report(metrics)
        if resume_from:
            resume.save(Path(resume_from), {
                "key": resume.resume_key(cfg), "epoch": epoch, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict() if per_step == "epoch" else None,
                "rng": torch.get_rng_state(), "history": history, "best_acc": best_acc, "best_state": best_state,
                "best_epoch": best_epoch, "stale": stale})
        if cfg.patience and stale >= cfg.patience:
            break
    if bar is not None:
        bar.close()

    if cfg.keep == "last" and history:
        best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)   # early stopping restores the best-validation weights
    final = {"default": max(best_acc, 0.0), "best_val_accuracy": max(best_acc, 0.0), "best_epoch": best_epoch,
             "epochs_run": len(history), "resumed_from_epoch": resumed_from, "params": count_parameters(model),
             "train_seconds": time.perf_counter() - start, "startup_seconds": startup, "device": str(device),
             "bf16_autocast": amp, **hardware(device),
             "diverged": diverged is not None}
    if cfg.eval_test and best_state is not None:
        final["test_accuracy"] = evaluate(net, d.test_x, d.test_y, loss, amp)["accuracy"]
    if diverged:
        print(f"[train] {diverged}", file=sys.stderr)
        final["error"] = diverged   # before saving: final.json says why the run stopped
    if output_dir is not None:
        save_run(Path(output_dir), cfg, history, final, best_state)
    return final


def _restore_schedule(sched, per_step, saved: dict, steps_per_epoch: int) -> None:
    """Plateau state is restored as saved; per-step schedules are rebuilt for the new budget and moved to the step
    the saved run had reached (their shape depends on the total, so a resumed cosine run is close to, not equal to,
    a fresh run of the larger budget)."""
    if per_step == "epoch" and saved.get("scheduler"):
        sched.load_state_dict(saved["scheduler"])
    elif per_step == "step":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "scheduler.step() before optimizer.step()": intended here
            for _ in range(saved["epoch"] * steps_per_epoch):
                sched.step()


def hardware(device: torch.device) -> dict:
    """What a result ran on, so it can be traced to a machine."""
    info = {"torch_version": str(torch.__version__), "cuda_version": torch.version.cuda}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(device_name=torch.cuda.get_device_name(index), gpu_index=index)
    else:
        import platform
        info.update(device_name=platform.processor() or platform.machine(), gpu_index=None)
    return info


def save_run(out: Path, cfg: TrialConfig, history: list[dict], final: dict, state: dict | None) -> None:
    """The resolved config, the per-epoch metrics and the best checkpoint (with its config, loadable alone)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))
    (out / "final.json").write_text(json.dumps(final, indent=2) + "\n")
    if state is not None:
        torch.save({"config": cfg.to_dict(), "state_dict": state, "metrics": final}, out / "best.pt")


def _process_start() -> float:
    try:
        import psutil   # installed with nni; absent on a bare GPU box, where the module import time stands in
        return psutil.Process().create_time()
    except ImportError:
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def _progress_bar(total: int):
    from tqdm import tqdm
    return tqdm(total=total, unit="img", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
