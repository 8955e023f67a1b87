"""Training as a plain function of a config: `train(config, report) -> TrainResult`. It never imports nni.

The whole split lives in one tensor on the device; each epoch shuffles it with `randperm` and augments batches with
tensor ops (the airbench way, no DataLoader). Each epoch calls `report(metrics)` with `default` = validation accuracy.
The result holds the trained model (best-validation or last weights, as `keep` says) and the final metrics: best
validation accuracy, the test accuracy of the kept weights, epochs run, seconds, and the network's cost (trial/cost.py:
parameters, multiply-adds, batch-1 latency, size), measured before the first step.

    result = train(resolve({"dataset": "fmnist", "epochs": 3}), report=print)
    result.metrics["best_val_accuracy"], result.model
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
import math
import platform
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as data_mod
from . import resume
from .augment import training_transform
from .averaging import EMA, Lookahead, weight_average
from .config import ConfigError, TrialConfig
from .cost import ConstraintError, broken_limit, measure
from .files import json_text, make_dir, remove_file, write_file, write_files
from .folder import FolderOptions
from .inference import evaluate, infer
from .model import build_model, count_parameters
from .networks import AirbenchNet
from .optim import LOSSES, OPTIMIZERS, SCHEDULES, Loss, Schedule, param_groups
from .precision import at_chance, fallback_message, float32_too_message

Report = Callable[[dict], None]
WHITENING_IMAGES = 5000   # training images the airbench stem's whitening is computed from (airbench94: 5000)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the loss and the epoch's peak learning rate."""


class TrainingInterrupted(RuntimeError):
    """Raised between batches once SIGINT or SIGTERM has asked the run to stop (see StopRequest)."""


class Bf16AtChance(RuntimeError):
    """The first epoch under bfloat16 autocast ended at chance accuracy (trial/precision.py): `train` restarts the run
    in float32 on the same `data`; `message` is the line it prints."""

    def __init__(self, message: str, data: data_mod.DeviceData):
        super().__init__(message)
        self.data = data


class Interrupted(KeyboardInterrupt):
    """What `train` raises once an interrupted run has kept what it trained: `signum` is the signal (SIGINT: Ctrl-C;
    SIGTERM: `kill`, NNI, a batch scheduler); the entry point exits with 128 + signum (130 for Ctrl-C). `said`: the
    line saying what was kept has been printed (not when a second signal, or one outside the epochs, stopped it)."""

    def __init__(self, signum: int, said: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.said = signum, said


class StopRequest:
    """SIGINT and SIGTERM while `train` runs. While the epochs run (`armed`) the first is only noted: the loop stops
    before its next batch, and the run keeps what it trained; a second signal, or one at any other time (loading the
    data, saving), raises Interrupted at once, as Ctrl-C does in Python. Installed in the main thread only, and only
    over Python's default handlers (a caller's own handler is left alone); the previous handlers are restored."""

    def __init__(self):
        self.signum: int | None = None
        self.armed = False
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame) -> None:
        if not self.armed or self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum


@dataclass
class TrainResult:
    """What `train` returns: the model with the kept weights (eval mode, on the training device), the final metrics
    (what final.json holds and the adapter reports), the per-epoch metrics and the config it trained with."""
    model: nn.Module
    metrics: dict
    history: list[dict]
    config: TrialConfig


def pick_device(name: str) -> torch.device:
    """"auto" (CUDA when torch sees it, else the CPU), "cpu", "cuda" or "cuda:N"; ConfigError for CUDA without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA device; use device 'auto' or 'cpu'")
    return torch.device(name)


@functools.cache
def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast pays here: CUDA GPUs that support it, and CPUs with native bfloat16 instructions
    (AVX512-BF16 or AMX; about 1.5x faster training on such a CPU, and several times slower where it is emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Where the batches of an epoch of `n` images start. A remainder of one image joins the batch before it: a batch
    of one sample would reach BatchNorm in training, which cannot normalise it (`Expected more than 1 value per
    channel`), so with n = 513 and batch_size 256 the batches hold 256 and 257 images."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in an epoch of `n` images: the number of batches `batches` yields."""
    return len(batch_starts(n, batch_size))


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches (images [B, C, H, W], labels [B]) from tensors on the device, each batch of
    images passed through `transform` (trial.augment.training_transform) when given. Every image once; never a batch
    of one image when there are more (see batch_starts)."""
    order = torch.randperm(len(x), device=x.device)
    starts = batch_starts(len(order), batch_size)
    for i, start in enumerate(starts):
        idx = order[start:starts[i + 1] if i + 1 < len(starts) else len(order)]
        yield (transform(x[idx]) if transform is not None else x[idx]), y[idx]


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, schedule: Schedule, loss: Loss,
                epoch_batches: Iterator[tuple[torch.Tensor, torch.Tensor]], amp: bool = False, progress=None,
                average: EMA | Lookahead | None = None, stop: StopRequest | None = None) -> float:
    """One pass over `epoch_batches`; returns the mean training loss. `average`, an average of the weights
    (trial/averaging.py), is updated after every step. Raises TrainingDiverged when the loss is not finite (checked
    once per epoch: a check per batch would wait for the GPU at every step), TrainingInterrupted before a batch once
    `stop` has noted a signal."""
    net.train()
    total, seen, peak_lr = None, 0, 0.0
    for x, y in epoch_batches:
        if stop is not None and stop.signum is not None:
            raise TrainingInterrupted
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            batch_loss = loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        peak_lr = max(peak_lr, opt.param_groups[0]["lr"])   # the rate the steps took, before the schedule moves it
        schedule.after_batch()
        if average is not None:
            average.update(net)
        total = batch_loss.detach() * len(y) + (0 if total is None else total)
        seen += len(y)
        if progress is not None:
            progress.update(len(y))
    mean = float(total) / seen
    if not math.isfinite(mean):
        # the epoch's peak rate, not the last: a one-cycle schedule ends an epoch near 0, which caused nothing
        raise TrainingDiverged(f"training loss became {mean} with the learning rate up to {peak_lr:.3g} in the epoch")
    return mean


def validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss, amp: bool = False,
             tta: str = "none") -> dict:
    """Loss, accuracy and balanced accuracy (the mean recall over the classes present in y, as scikit-learn's
    balanced_accuracy_score) of `model` on a whole split x [N, C, H, W], y [N], from one pass of trial.inference.infer."""
    logits = infer(model, x, amp, tta)
    hit = logits.argmax(1) == y
    counts = torch.bincount(y, minlength=logits.shape[1])
    recall = torch.bincount(y[hit], minlength=logits.shape[1]).float() / counts.clamp_min(1)
    return {"loss": float(loss(logits, y)), "accuracy": float(hit.float().mean()),
            "balanced_accuracy": float(recall[counts > 0].mean())}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: TrialConfig, report: Report | None = None, data: data_mod.DeviceData | None = None,
          output_dir: str | Path | None = None, data_dir: str | None = None, progress: bool = False,
          resume_from: str | Path | None = None) -> TrainResult:
    """Train one model as `cfg` says, calling `report(metrics)` after each epoch (its validation accuracy as "default"
    and "val_loss" where validation was scored: every epoch, or the last only with `val_every_epoch` off); return the
    model and its metrics.

    `data` reuses splits already on the device (else they are prepared from `data_dir`); `output_dir` receives
    config.json, metrics.jsonl, final.json and best.pt; with `resume_from` (a file, see trial/resume.py) the run
    continues from the state a run of the same config with a smaller budget saved there, re-reports those epochs,
    and saves its own state after every epoch. A loss that turns NaN ends the run early with the best weights so far,
    `diverged` True, `diverged_epoch` and `default` 0.0 (ranked last by a tuner, never NaN) in the metrics. Raises
    ConfigError for an unusable device or an out-of-memory error in training (one line: the batch size and the
    parameter count), trial.cost.ConstraintError (a ConfigError: one line, the limit, the measured value and the fix)
    before the first step for a network over the config's max_params, max_macs or max_latency_ms, with its final.json
    written (see refuse_over_limits), trial.data.DatasetError for missing or corrupt data, and trial.files.OutputError (one line:
    the path and the cause) for an output that cannot be written: config.json is written before training starts,
    metrics.jsonl after every epoch, final.json last, each whole or not at all (trial/files.py).

    Interrupted (SIGINT: Ctrl-C, or SIGTERM) while the epochs run, the run stops before its next batch, keeps what it
    trained as the NaN path does (the best weights so far, or the last with keep "last"), writes final.json with
    `interrupted` (the signal's name) and says so in one line naming the folder; then raises Interrupted."""
    with StopRequest() as stop:
        start = time.perf_counter()
        # a promoted trial whose run fell back to float32 resumes it in float32
        fallback = resume.fallback_of(Path(resume_from), cfg) if resume_from and cfg.amp else None
        try:
            return _train(dataclasses.replace(cfg, amp=False) if fallback else cfg, report, data, output_dir,
                          data_dir, progress, resume_from, stop, start, amp_fallback=fallback)
        except Bf16AtChance as err:
            print(f"[train] {err}", file=sys.stderr)
            return _train(dataclasses.replace(cfg, amp=False), report, err.data, output_dir, data_dir, progress,
                          resume_from, stop, start, amp_fallback=str(err))


def _train(cfg: TrialConfig, report: Report | None, data: data_mod.DeviceData | None, output_dir: str | Path | None,
           data_dir: str | None, progress: bool, resume_from: str | Path | None, stop: StopRequest, start: float,
           amp_fallback: str | None = None) -> TrainResult:
    # an output folder that cannot be written is found before training, not after it
    out = start_outputs(Path(output_dir), cfg) if output_dir is not None else None
    device = pick_device(cfg.device)
    if cfg.threads:
        # concurrent trials on one CPU: each with every core's worth of threads runs many times slower
        torch.set_num_threads(cfg.threads)
    amp = cfg.amp and bf16_supported(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    d = data or data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, device, cfg.train_subset, data_dir,
                                 with_test=cfg.eval_test, options=FolderOptions.of(cfg))
    # channels-last convolutions are faster on GPUs and on CPUs alike (oneDNN), most of all with bfloat16
    model = build_model(cfg, d.info.shape, len(d.info.classes)).to(device, memory_format=torch.channels_last)
    if isinstance(model, AirbenchNet):
        model.init_whitening(d.train_x[:WHITENING_IMAGES])
    # the network's cost follows from its shape, not its weights: measured once, before the first step, where a
    # network over the config's limits is refused (trial/cost.py)
    try:
        cost = measure(model, d.info.shape, device, cfg.threads)
    except torch.OutOfMemoryError:
        raise out_of_memory(cfg, device, model) from None
    refuse_over_limits(cfg, cost, device, out, start)
    # `net` runs the batches; `model` owns the weights (a compiled wrapper would prefix every state-dict key)
    net = torch.compile(model) if cfg.compile else model
    opt = OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)
    steps = steps_per_epoch(len(d.train_x), cfg.batch_size)
    average = weight_average(model, cfg, cfg.epochs * steps)
    scored = average.scored(net) if average is not None else net   # what validation sees
    schedule = SCHEDULES[cfg.lr_schedule](opt, cfg, cfg.epochs * steps)
    loss = LOSSES[cfg.loss](cfg)
    bar = _progress_bar(cfg.epochs * len(d.train_x)) if progress else None
    startup = time.time() - _process_start()   # imports, data, model: what a trial pays before its first step

    state = resume.restore(Path(resume_from), cfg, model, opt, schedule, steps, average) if resume_from \
        else resume.RunState()
    state.amp_fallback = amp_fallback   # saved with the state: a resumed run stays in float32
    amp_check = None
    transform = training_transform(cfg, d.info)
    resumed_from, diverged, diverged_epoch = len(state.history), None, 0
    for metrics in state.history:   # the curve stays whole in the dashboard
        if report is not None:
            report({**metrics, "resumed": 1})
    if bar is not None:
        bar.update(resumed_from * len(d.train_x))
    stop.armed = True
    for epoch in range(resumed_from + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        if isinstance(model, AirbenchNet):   # airbench94 trains the whitening bias for its first epochs only
            model.set_whitening_bias_trainable(epoch <= cfg.whiten_bias_epochs)
        try:
            train_loss = train_epoch(net, opt, schedule, loss, batches(d.train_x, d.train_y, cfg.batch_size,
                                                                       transform), amp, bar, average, stop)
        except TrainingDiverged as err:
            diverged, diverged_epoch = f"{err} in epoch {epoch}; {divergence_advice(cfg, amp)}", epoch
            break
        except TrainingInterrupted:
            break
        except torch.OutOfMemoryError:
            raise out_of_memory(cfg, device, model) from None
        metrics = {"train_loss": train_loss, "lr": opt.param_groups[0]["lr"], "epoch": epoch}
        scheduled = cfg.val_every_epoch or epoch == cfg.epochs
        # the first epoch under bfloat16, and the float32 one that replaces it, are always scored (trial/precision.py)
        checked = epoch == 1 and (amp or amp_fallback is not None)
        val = validate(scored, d.val_x, d.val_y, loss, amp, cfg.tta) if scheduled or checked else None
        counts = torch.bincount(d.val_y.cpu(), minlength=len(d.info.classes)) if checked else None
        if checked and at_chance(val["accuracy"], counts):
            if amp:   # at chance under bfloat16: the run starts again in float32, before anything is reported
                if bar is not None:
                    bar.close()
                raise Bf16AtChance(fallback_message(val["accuracy"], counts), d)
            # at chance in float32 too: a slow start, not bfloat16's doing; bfloat16 trains the epochs after this one
            amp, cfg = True, dataclasses.replace(cfg, amp=True)
            amp_check, amp_fallback = float32_too_message(val["accuracy"]), None
            state.amp_fallback = None
            print(f"[train] {amp_check}", file=sys.stderr)
        if scheduled:
            score = val[cfg.metric]   # what the tuner sees, and what keeps the best weights
            schedule.after_epoch(score)
            both = {"val_accuracy": val["accuracy"], "val_balanced_accuracy": val["balanced_accuracy"]} \
                if d.info.from_path or cfg.metric != "accuracy" else {}
            metrics = {"default": score, "val_loss": val["loss"], **both, **metrics}
            if score > state.best_acc:
                state.best_acc, state.best_epoch, state.stale = score, epoch, 0
                if cfg.keep == "best":
                    # from the plain module: a compiled wrapper would prefix every key
                    state.best_state = copy.deepcopy((average.scored(model) if average else model).state_dict())
            else:
                state.stale += 1
        metrics["epoch_seconds"] = time.perf_counter() - t0
        state.history.append(metrics)
        if out is not None:   # the curve so far, on disk as it grows
            write_file(out / "metrics.jsonl", jsonl(state.history))
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}",
                            **({"val_acc": f"{metrics['default']:.4f}"} if "default" in metrics else {}))
        if report is not None:
            report(metrics)
        if resume_from:
            resume.save(Path(resume_from), cfg, epoch, model, opt, schedule, state, average)
        if cfg.patience and state.stale >= cfg.patience:
            break
    stop.armed = False
    interrupted = signal.Signals(stop.signum).name if stop.signum is not None else None
    if bar is not None:
        bar.close()

    if average is not None and state.history:
        average.finish(model)
    kept = copy.deepcopy(model.state_dict()) if cfg.keep == "last" and state.history else state.best_state
    if kept is not None:
        model.load_state_dict(kept)   # early stopping restores the best-validation weights
    final = {"default": max(state.best_acc, 0.0), "best_val_accuracy": max(state.best_acc, 0.0),
             "best_epoch": state.best_epoch, "epochs_run": len(state.history), "resumed_from_epoch": resumed_from,
             **cost, "train_seconds": time.perf_counter() - start,
             "startup_seconds": startup, "device": str(device), "bf16_autocast": amp, **hardware(device),
             "diverged": diverged is not None, **d.info.metrics(),
             **({"amp_fallback": amp_fallback} if amp_fallback else {}),
             **({"amp_check": amp_check} if amp_check else {}),
             **({"metric": cfg.metric} if cfg.metric != "accuracy" else {})}   # best_val_accuracy is of this metric
    if cfg.eval_test and kept is not None and not interrupted:
        final["test_accuracy"] = evaluate(net, d.test_x, d.test_y, loss, amp, cfg.tta)["accuracy"]
    if diverged:
        print(f"[train] {diverged}", file=sys.stderr)
        # the tuner sees a real number that ranks the run last (never NaN), and why: the epoch it diverged in; the
        # best accuracy before that stays in best_val_accuracy, the reason in words in final.json's "error"
        final.update(default=0.0, diverged_epoch=diverged_epoch, error=diverged)
    if interrupted:
        final.update(interrupted=interrupted, error=f"interrupted by {interrupted} after {len(state.history)} "
                                                   f"epoch(s)")
    if out is not None:
        save_run(out, cfg, state.history, final, kept)
    if interrupted:
        print(f"[train] {interrupted_line(final, cfg, out, kept is not None)}", file=sys.stderr)
        raise Interrupted(stop.signum, said=True)
    return TrainResult(model.eval(), final, state.history, cfg)


def out_of_memory(cfg: TrialConfig, device: torch.device, model: nn.Module) -> ConfigError:
    """The one line for an out-of-memory error: the device, the parameter count, the batch size and the fix."""
    return ConfigError(f"out of memory on {device} training a model of {count_parameters(model):,} parameters with "
                       f"batch_size {cfg.batch_size}; lower batch_size (or width_mult), or use a device with more "
                       f"memory")


def refuse_over_limits(cfg: TrialConfig, cost: dict, device: torch.device, out: Path | None, start: float) -> None:
    """Raise ConstraintError (one line: the limit, the measured value, the fix) when `cost` (trial.cost.measure's
    dict) breaks a limit of `cfg`, after writing the refused run's final.json (and config.json, an empty
    metrics.jsonl) to `out`: `default` 0.0 (ranked last by a tuner, never NaN), `refused` True, the broken limit's key
    as `constraint`, the line as `error`, and the measured figures."""
    broken = broken_limit(cfg, cost)
    if broken is None:
        return
    key, line = broken
    final = {"default": 0.0, "best_val_accuracy": 0.0, "best_epoch": 0, "epochs_run": 0, **cost,
             "train_seconds": time.perf_counter() - start, "device": str(device), **hardware(device),
             "refused": True, "constraint": key, "error": line}
    if out is not None:
        save_run(out, cfg, [], final, None)
    raise ConstraintError(line, key, final)


def interrupted_line(final: dict, cfg: TrialConfig, out: Path | None, weights: bool) -> str:
    """One line for a run stopped by a signal: after how many epochs, and where what it trained is."""
    said = f"stopped by {final['interrupted']} after {final['epochs_run']} epoch(s)"
    if out is None:
        return f"{said}; no output folder was given: nothing kept"
    if not weights:
        return f"{said}: no epoch finished, no weights kept; {out / 'final.json'} marked interrupted"
    which = (f"the best weights so far (epoch {final['best_epoch']}, validation accuracy "
             f"{final['best_val_accuracy']:.4f})" if cfg.keep == "best" else "the weights when it stopped")
    return f"{said}: {which} kept in {out / 'best.pt'}; {out / 'final.json'} marked interrupted"


def divergence_advice(cfg: TrialConfig, amp: bool) -> str:
    """What to change after a non-finite loss, for this config: a lower learning rate always; float32 when bfloat16
    autocast was on (the CIFAR-10 cell network of results/cifar10-nas-comparison went to NaN in its first epoch in
    bfloat16 and trained in float32, same command otherwise: a wrong bfloat16 CPU kernel, since worked around in
    trial.nas_space.Float32DilatedConv2d; others may exist); BatchNorm only where the config can turn it on."""
    advice = ["lower learning_rate"]
    if amp:
        advice.append("train in float32 (amp false; bfloat16 autocast was on)")
    if cfg.family == "plain" and not cfg.batch_norm:
        advice.append("turn on batch_norm")
    return ", or ".join(advice)


def hardware(device: torch.device) -> dict:
    """What a result ran on, so it can be traced to a machine: torch/CUDA versions, device name, GPU index."""
    info = {"torch_version": str(torch.__version__), "cuda_version": torch.version.cuda}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(device_name=torch.cuda.get_device_name(index), gpu_index=index)
    else:
        info.update(device_name=platform.processor() or platform.machine(), gpu_index=None)
    return info


def start_outputs(out: Path, cfg: TrialConfig) -> Path:
    """Make the output folder and write config.json, before any training. The final.json and best.pt of an earlier
    run there go first: the folder now holds this run, and final.json marks its outputs complete. Raises OutputError
    (the path and the cause)."""
    make_dir(out)
    for name in ("final.json", "best.pt"):
        remove_file(out / name)
    write_file(out / "config.json", json_text(cfg.to_dict()))
    return out


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def save_run(out: Path, cfg: TrialConfig, history: list[dict], final: dict, state: dict | None) -> None:
    """The resolved config, the per-epoch metrics and the kept weights (with their config, loadable alone), then
    final.json: each file whole or not at all, final.json only once every other is in place (trial.files.write_files),
    so that a folder with a final.json holds every output of its run. Raises OutputError (the path and the cause)."""
    files = {out / "config.json": json_text(cfg.to_dict()), out / "metrics.jsonl": jsonl(history)}
    if state is not None:
        buffer = io.BytesIO()   # serialised here: a full disk then fails as an OSError that names its cause
        torch.save({"config": cfg.to_dict(), "state_dict": state, "metrics": final}, buffer)
        files[out / "best.pt"] = buffer.getvalue()
    else:
        remove_file(out / "best.pt")   # an earlier run's weights are not this run's
    files[out / "final.json"] = json_text(final)
    write_files(files)


def _process_start() -> float:
    try:
        import psutil  # installed with nni; absent on a bare GPU box, where the module import time stands in
        return psutil.Process().create_time()
    except ImportError:
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def _progress_bar(total: int):
    from tqdm import tqdm
    return tqdm(total=total, unit="img", unit_scale=True, dynamic_ncols=True, file=sys.stderr)
