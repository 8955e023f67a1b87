"""Make a ready NNI experiment for a folder of images (or a CSV manifest, an .npz): audited, sized, written, said.

    python -m experiments.new path/to/images --budget 45m
    python -m experiments.new path/to/images --budget 2h --mirror-safe --image-size 64 --out experiments-photos

1. The data is audited first (trial/folder.py, as `python -m trial.data PATH` prints it): a dataset the audit refuses
   (files that do not decode, the same image in two splits, a class too small for the splits) is refused in one line
   naming its first problem, and nothing is written (exit 1).
2. This machine is measured: a few training steps of each family's middle configuration and of the hand designs (BASELINES),
   at the audit's image size and channel count, one torch thread (as a trial runs), bfloat16 autocast where the CPU
   or GPU has it (as training does).
3. The budget (search, then the report's retraining of the winner and the hand designs over the seeds) is split
   from those rates: the retraining epochs first (about RETRAIN_SHARE of the budget), the rest goes to the search,
   whose trials run at a lower fidelity (a third of the epochs, a subset of the training images when a trial would
   otherwise be too slow for about TARGET_TRIALS of them), one torch thread each, as many at once as there are cores.
4. It writes into the folder (default `experiments-<name>/`): `search_space.json` (plain stacks, residual networks and
   the airbench design as NNI nested choices, their depths and kernels sized for the image side; mirrors only with
   `--mirror-safe`), checked with trial/search_space.py and every draw resolved into a trial config; `config.yml`
   (FixedTPE maximising the validation metric, Medianstop where trials run 3 epochs or more), checked with NNI's
   ExperimentConfig; and `plan.json`, the measured rates and every sizing decision.
5. It prints the command that starts the search through our secure starter (which runs the pre-flight check), and
   the report that follows: the winner and the hand designs (airbench-style, ResNet-20) retrained on these images
   under one protocol, the baselines moved onto this dataset by the report.

Classes more imbalanced than trial/folder.py's IMBALANCE_FLAG get the tuner's metric balanced accuracy (`--metric`
says otherwise); the report then leads with balanced accuracy and macro F1.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments.results.retrain import on_dataset
from trial import REPO
from trial.config import METRICS, ConfigError, load_params_file, resolve
from trial.data import DatasetError
from trial.files import OutputError, json_text, write_files
from trial.folder import VAL_FRACTION, FolderOptions, audit, load, refusal
from trial.images import RESIZE_MODES
from trial.networks import airbench_max_groups, residual_max_stages
from trial.search_space import SearchSpaceError, sample, validate

# the hand designs the report retrains: airbench-style, ResNet-20 and torchvision's ResNet-18 from scratch
BASELINES = ("baselines/airbench_cifar10_half.json", "baselines/resnet.json", "baselines/resnet18_torchvision.json")
RETRAIN_SHARE = 0.6     # of the budget, at most, for retraining the winner and the hand designs over the seeds
TARGET_TRIALS = 20      # trials the search should finish (TPE draws at random until 20 have completed)
MAX_EPOCHS = 40         # retraining epochs at most, however cheap the data
MARGIN_S = 60           # starting and stopping NNI, the report's figures and export
TRIAL_OVERHEAD_S = 8    # a trial's imports (torch, nni), cached data and model before its first step
RUN_OVERHEAD_S = 4      # a retraining run's model, checkpoint and test scoring
PARALLEL_EFFICIENCY = 0.75   # a retraining run on every core trains this times cores as fast as on one
EVAL_SPEEDUP = 3.0      # scoring (forward only) images per second over training images per second
MIN_SEARCH_S = 120      # a search shorter than this finds nothing worth reporting
PROBE_BATCH, PROBE_STEPS = 32, 2


class NewError(RuntimeError):
    """An experiment that cannot be made as asked: the budget, the folder, the output; one line."""


def parse_budget(text: str) -> float:
    """'45m', '1h30m', '2h', '2700s', '90' (minutes) -> seconds. ValueError for anything else."""
    units = {"h": 3600, "m": 60, "min": 60, "s": 1, "": 60}
    parts = re.fullmatch(r"\s*((\d+(?:\.\d+)?)\s*(h|min|m|s)?\s*)+", text.lower())
    if not parts:
        raise ValueError(f"budget {text!r}: give minutes or hours, e.g. 45m, 1h30m, 2h, 2700s")
    seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)?", text.lower()))
    if seconds <= 0:
        raise ValueError(f"budget {text!r} is no time at all")
    return seconds


# --------------------------------------------------------------------------------------------- the search space
def _choice(*values) -> dict:
    return {"_type": "choice", "_value": list(values)}


def _log(low: float, high: float) -> dict:
    return {"_type": "loguniform", "_value": [low, high]}


def _uniform(low: float, high: float) -> dict:
    return {"_type": "uniform", "_value": [low, high]}


def batch_sizes(n_train: int, largest: int = 512) -> list[int]:
    """Batch sizes that give an epoch of at least 8 steps, powers of two from 16 to `largest`: the largest such and
    half of it (a folder of 600 training images: 32 and 64)."""
    top = 16
    while top * 2 <= min(largest, n_train / 8):
        top *= 2
    return sorted({max(16, top // 2), top})


def search_space(side: int, n_train: int, mirror_safe: bool) -> dict:
    """The families as NNI nested choices under `family`, sized for images side x side: plain stacks with as many
    pooling blocks as keep a map of 2x2 or more and kernels that fit every block's map (trial.config._check_maps),
    residual networks of 3 stages (4 from 64 px: one more halving), the airbench design with 3 groups (fewer where
    the side allows fewer; trial.networks.airbench_max_groups). Mirrors (flip augmentation, mirror test-time
    augmentation) only where the images are mirror-safe."""
    batches = batch_sizes(n_train)
    augmentation = ["crop", "crop_flip"] if mirror_safe else ["crop"]
    tta = ["none", "mirror"] if mirror_safe else ["none"]
    blocks = max(1, min(4, int(math.log2(side)) - 1))             # the last block still sees 2x2 or more
    kernels = [3, 5] if side >> (blocks - 1) >= 3 else [3]      # a 5x5 kernel needs a 3x3 map or more
    plain = {"_name": "plain", "conv_layers": _choice(*range(max(1, blocks - 2), blocks + 1)),
             "filters": _choice(16, 32, 64), "kernel": _choice(*kernels), "convs_per_block": _choice(1, 2),
             "batch_norm": _choice(True), "head": _choice("gap", "flatten") if side <= 32 else _choice("gap"),
             "dense_units": _choice(0, 64, 128), "dropout": _uniform(0.0, 0.5), "optimizer": _choice("adamw"),
             "learning_rate": _log(3e-4, 3e-3), "weight_decay": _log(1e-4, 5e-2),
             "lr_schedule": _choice("cosine", "onecycle"), "batch_size": _choice(*batches),
             "label_smoothing": _uniform(0.0, 0.2), "augment": _choice(True, False),
             "augmentation": _choice(*augmentation), "tta": _choice(*tta)}
    stages = min(4 if side >= 64 else 3, residual_max_stages(side))
    residual = {"_name": "residual", "conv_layers": _choice(stages),
                **{f"filters_{i}": _choice(16 << i - 1, 32 << i - 1) for i in range(1, stages + 1)},
                "blocks": _choice(1, 2, 3), "downsample": _choice("stride", "pool"), "shortcut": _choice("projection"),
                "activation": _choice("relu", "gelu"), "dropout": _uniform(0.0, 0.3), "optimizer": _choice("sgd"),
                "momentum": _choice(0.9), "learning_rate": _log(0.02, 0.3), "weight_decay": _log(1e-4, 2e-3),
                "lr_schedule": _choice("cosine", "onecycle"), "batch_size": _choice(*batches),
                "label_smoothing": _uniform(0.0, 0.2), "cutout": _choice(0, 8), "augment": _choice(True),
                "augmentation": _choice(*augmentation), "tta": _choice(*tta)}
    groups = min(3, airbench_max_groups(side))
    airbench = {"_name": "airbench", "conv_layers": _choice(groups),
                **{f"filters_{i}": _choice(*((24, 32, 48) if i == 1 else (64, 128, 192))) for i in range(1, groups + 1)},
                "activation": _choice("gelu", "relu"), "optimizer": _choice("sgd"), "momentum": _choice(0.85),
                "decoupled_weight_decay": _choice(True), "norm_bias_lr_scale": _choice(64),
                "learning_rate": _log(0.2, 2.0), "weight_decay": _log(5e-4, 5e-3),
                "label_smoothing": _uniform(0.0, 0.3), "lr_schedule": _choice("warmup_linear"),
                "ema_decay": _choice(0.95), "lookahead": _choice(True), "batch_size": _choice(max(batches)),
                "cutout": _choice(0, 8), "augment": _choice(True), "augmentation": _choice(*augmentation),
                "crop_pad": _choice(2, 4), "tta": _choice(*(["mirror_translate"] if mirror_safe else ["none"]))}
    return {"family": {"_type": "choice", "_value": [airbench, residual, plain]}}


def middle(branch: dict) -> dict:
    """A branch's middle configuration: each choice's middle option, each range's (geometric for log ranges)
    middle. What the rate of a branch is measured on."""
    out = {}
    for key, spec in branch.items():
        if key == "_name":
            continue
        values = spec["_value"]
        if spec["_type"] == "choice":
            out[key] = values[(len(values) - 1) // 2]
        elif spec["_type"] == "loguniform":
            out[key] = math.sqrt(values[0] * values[1])
        else:
            out[key] = (values[0] + values[1]) / 2
    return {"family": branch["_name"], **out}


# --------------------------------------------------------------------------------------------- this machine
@dataclass
class Machine:
    cores: int
    device: str
    bf16: bool
    rates: dict[str, float] = field(default_factory=dict)   # training images per second on one thread, by model


def measure(models: dict[str, dict], data_keys: dict, shape: tuple[int, int, int], classes: int) -> Machine:
    """Training images per second of each model (params without the data keys) on one torch thread, a few steps of
    random images of `shape`, bfloat16 autocast where it pays (trial.train.bf16_supported), as a trial trains."""
    import torch

    from trial.model import build_model
    from trial.networks import AirbenchNet
    from trial.train import bf16_supported, pick_device
    device = pick_device("auto")
    amp = bf16_supported(device)
    machine = Machine(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      str(device), amp)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(PROBE_BATCH, *shape, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (PROBE_BATCH,), device=device)
        for name, params in models.items():
            model = build_model(resolve(params, data_keys), shape, classes).to(device,
                                                                               memory_format=torch.channels_last)
            if isinstance(model, AirbenchNet):
                model.init_whitening(x)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            for step in range(PROBE_STEPS + 1):
                if step == 1:                   # the first step warms caches up: not timed
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            machine.rates[name] = PROBE_BATCH * PROBE_STEPS / max(time.perf_counter() - start, 1e-6)
    finally:
        torch.set_num_threads(threads)
    return machine


# --------------------------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """How the budget is spent, every figure in seconds or images."""
    budget_s: float
    seeds: int
    retrain_epochs: int
    retrain_s: float
    search_s: float
    trial_epochs: int
    train_subset: int          # 0: every training image
    trial_s: float
    concurrency: int
    threads: int
    max_trials: int
    notes: list[str] = field(default_factory=list)


def plan(budget_s: float, n_train: int, n_val: int, n_test: int, val_given: bool, classes: int, machine: Machine,
         branches: list[str], seeds: int = 3, trial_epochs: int | None = None) -> Plan:
    """Split `budget_s` between the search and the report's retraining (module docstring, point 3). `n_train`
    training images (validation included when it is drawn from them), `n_val` validation images. Raises NewError
    when even one retraining epoch of each model leaves no search worth the name."""
    # one torch thread a trial, a trial per core; on a GPU four trials share it, the cores shared among them
    threads = max(1, machine.cores // 4) if machine.device.startswith("cuda") else 1
    concurrency = max(1, machine.cores // threads)
    speed = PARALLEL_EFFICIENCY * machine.cores
    search_rate = sum(machine.rates[b] for b in branches) / len(branches)   # the tuner draws every family
    retrained = n_train + (n_val if val_given else 0)                       # train_val: train + validation
    models = [search_rate] + [machine.rates[b] for b in machine.rates if b.startswith("baseline_")]

    def retrain_s(epochs: int, n_seeds: int) -> float:
        return sum(n_seeds * (epochs * retrained / (r * speed) + n_test / (EVAL_SPEEDUP * r * speed)
                              + RUN_OVERHEAD_S) for r in models) + MARGIN_S

    notes = []
    if retrain_s(1, seeds) + MIN_SEARCH_S > budget_s and seeds > 2:
        seeds = 2
        notes.append("2 seeds, not 3: three would not fit the budget")
    if retrain_s(1, seeds) + MIN_SEARCH_S > budget_s:
        need = math.ceil((retrain_s(1, seeds) + MIN_SEARCH_S) / 60)
        raise NewError(f"a budget of {budget_s / 60:.0f} minutes is too small for {retrained} images on this machine "
                       f"({machine.device}, {machine.cores} cores): one retraining epoch of the winner and the "
                       f"{len(models) - 1} hand designs over {seeds} seeds and {MIN_SEARCH_S // 60} minutes of search need about {need}; give "
                       f"--budget {need}m or more")
    epochs = 1
    while epochs < MAX_EPOCHS and retrain_s(epochs + 1, seeds) <= RETRAIN_SHARE * budget_s:
        epochs += 1
    search_s = budget_s - retrain_s(epochs, seeds)
    train_images = n_train - (0 if val_given else n_val)

    def trial_s(e: int, subset: int) -> float:
        return TRIAL_OVERHEAD_S + e * (subset / search_rate + n_val / (EVAL_SPEEDUP * search_rate))

    e_t = trial_epochs or min(epochs, max(1, math.ceil(epochs / 3)))
    per_trial = search_s * concurrency / TARGET_TRIALS
    floor_subset = min(train_images, max(256, 20 * classes))
    subset = train_images
    while trial_s(e_t, subset) > per_trial:
        fit = int(((per_trial - TRIAL_OVERHEAD_S) / e_t - n_val / (EVAL_SPEEDUP * search_rate)) * search_rate)
        if fit >= floor_subset:
            subset = fit
            break
        if e_t > 1 and not trial_epochs:
            e_t -= 1
            continue
        subset = floor_subset
        notes.append(f"trials of {e_t} epoch(s) on {subset} images still take {trial_s(e_t, subset):.0f} s: fewer "
                     f"than {TARGET_TRIALS} trials will finish")
        break
    seconds = trial_s(e_t, subset)
    return Plan(budget_s, seeds, epochs, budget_s - search_s, search_s, e_t, 0 if subset >= train_images else subset,
                seconds, concurrency, threads, max(concurrency, min(500, int(search_s * concurrency / seconds))),
                notes)


# --------------------------------------------------------------------------------------------- writing it
def _quiet_nni_load(path: Path):
    from nni.experiment.config import ExperimentConfig
    with contextlib.redirect_stdout(io.StringIO()):
        logging.disable(logging.CRITICAL)
        try:
            return ExperimentConfig.load(str(path)).canonical_copy()
        finally:
            logging.disable(logging.NOTSET)


def _relative(target: Path, start: Path) -> str:
    """target as the YAML names it: relative to the YAML's folder where that is inside the repository, else absolute."""
    try:
        start.resolve().relative_to(REPO)
    except ValueError:
        return str(target)
    return os.path.relpath(target, start.resolve())


def trial_command(flags: dict) -> str:
    import shlex
    return "python -m trial " + " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in flags.items())


def experiment_yaml(name: str, command: str, p: Plan, out: Path, header: list[str]) -> str:
    import yaml
    config = {"experimentName": f"{name}-families", "searchSpaceFile": "search_space.json", "trialCommand": command,
              "trialCodeDirectory": _relative(REPO, out), "trialConcurrency": p.concurrency,
              "maxTrialNumber": p.max_trials, "maxExperimentDuration": f"{math.ceil(p.search_s / 60)}m",
              "tuner": {"codeDirectory": _relative(REPO / "experiments" / "tuners", out),
                        "className": "fixed_tpe.FixedTPE", "classArgs": {"optimize_mode": "maximize"}}}
    if p.trial_epochs >= 3:   # Medianstop needs a few epochs to compare curves by (3 epochs: from the 2nd)
        config["assessor"] = {"name": "Medianstop", "classArgs": {"optimize_mode": "maximize",
                                                                  "start_step": max(2, p.trial_epochs // 2 + 1)}}
    config["trainingService"] = {"platform": "local"}
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in header) + \
        yaml.safe_dump(config, sort_keys=False, width=1000)


def _check_draws(space: dict, keys: dict, n: int = 60) -> None:
    """Every branch's middle and n random draws resolve into trial configs (as the pre-flight check does)."""
    import random
    rng = random.Random(0)
    for params in [middle(b) for b in space["family"]["_value"]] + [sample(space, rng) for _ in range(n)]:
        try:
            resolve(params, keys)
        except ConfigError as err:
            raise NewError(f"a drawn parameter set cannot train ({err}); e.g. {params}") from None


def make(path: str, budget: str = "45m", out: str | None = None, mirror_safe: bool = False, image_size: int = 0,
         resize_mode: str = "crop", metric: str = "auto", skip_bad_images: bool = False,
         drop_duplicates: bool = False, seeds: int = 3, port: int = 8080, trial_epochs: int | None = None,
         max_trials: int | None = None, force: bool = False, log=print) -> dict:
    """Audit, measure, size and write (module docstring); returns plan.json's content. Raises NewError (one line) for
    a budget, data or output folder that cannot make an experiment, DatasetError for a path that is no dataset."""
    try:
        budget_s = parse_budget(budget)
    except ValueError as err:
        raise NewError(str(err)) from None
    if resize_mode not in RESIZE_MODES:
        raise NewError(f"resize mode {resize_mode!r}: valid: {', '.join(RESIZE_MODES)}")
    root = Path(path).expanduser().resolve()
    options = FolderOptions(image_size=image_size, resize_mode=resize_mode, skip_bad_images=skip_bad_images,
                            drop_duplicates=drop_duplicates, mirror_safe=mirror_safe)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.stem).strip("-.") or "images"
    folder = Path(out) if out else Path(f"experiments-{name}")
    if (folder / "config.yml").exists() and not force:   # said before the audit, which may decode for minutes
        raise NewError(f"{folder / 'config.yml'} exists: give another --out, or --force to write over it")
    found = audit(root, options)
    if not found.ok:
        raise NewError(refusal(found))
    side, channels, classes = found.image_size, found.channels, len(found.classes)
    if not image_size:   # the trials name the side the audit chose: decode once more under that key, now, so that the
        load(root, FolderOptions(**{**asdict(options), "image_size": side}))   # first trials find it decoded
    n_train = sum(found.counts["train"].values())
    val_given = bool(sum(found.counts["val"].values()))
    n_val = sum(found.counts["val"].values()) if val_given else max(1, min(5000, round(VAL_FRACTION * n_train)))
    n_test = sum(found.counts["test"].values())
    chosen_metric = ("balanced_accuracy" if found.imbalanced else "accuracy") if metric == "auto" else metric
    if chosen_metric not in METRICS:
        raise NewError(f"metric {metric!r}: valid: auto, {', '.join(METRICS)}")

    # what every trial (and the report, from the winner's config) trains on: the keys left at their defaults unsaid
    given = {**asdict(FolderOptions(image_size=side, resize_mode=resize_mode, skip_bad_images=skip_bad_images,
                                    drop_duplicates=drop_duplicates, mirror_safe=mirror_safe)), "metric": chosen_metric}
    defaults = {**asdict(FolderOptions()), "metric": "accuracy"}
    keys = {"dataset": str(root), **{k: v for k, v in given.items() if v != defaults[k]}}
    space = search_space(side, n_train - (0 if val_given else n_val), mirror_safe)
    try:
        validate(space)
    except SearchSpaceError as err:
        raise NewError(f"the search space written for {side}x{side} images is refused: {err}") from None
    branches = {b["_name"]: middle(b) for b in space["family"]["_value"]}
    # the hand designs as the report will train them (retrain.on_dataset: a mirror off where the data is not safe)
    hand = {f"baseline_{Path(b).stem}": on_dataset(load_params_file(str(REPO / b)),
                                                   {**keys, "mirror_safe": mirror_safe})[0] for b in BASELINES}
    log(f"[new] measuring this machine: {len(branches) + len(hand)} models at {channels}x{side}x{side}, "
        f"{classes} classes ...")
    machine = measure({**branches, **{k: {q: v for q, v in p.items() if q not in keys} for k, p in hand.items()}},
                      keys, (channels, side, side), classes)
    p = plan(budget_s, n_train, n_val, n_test, val_given, classes, machine, list(branches), seeds, trial_epochs)
    if max_trials:
        p.max_trials = max_trials
    flags = {**keys, "epochs": p.trial_epochs, **({"train_subset": p.train_subset} if p.train_subset else {}),
             "threads": p.threads}
    _check_draws(space, flags)
    command = trial_command(flags)
    report_dir = Path("reports") / name
    yml = folder / "config.yml"
    commands = {
        "start": f"python -m experiments.secure nnictl create --config {yml} --port {port}",
        "stop": "nnictl stop ID",
        "report": f"python -m experiments.report ID --epochs {p.retrain_epochs} --seeds "
                  f"{' '.join(map(str, range(p.seeds)))} --baseline {' '.join(BASELINES)} --out {report_dir}",
        "predict": f"python experiments/results/predict.py {report_dir / 'model'} IMAGE ...",
    }
    rates = ", ".join(f"{k} {v:,.0f}" for k, v in machine.rates.items())
    header = [f"{name}: a search made by `python -m experiments.new {root} --budget {budget}` for "
              f"{classes} classes, {n_train} training images", f"(validation {n_val}, test {n_test}) decoded as "
              f"{channels}x{side}x{side} ({resize_mode}), mirror_safe {str(mirror_safe).lower()}, tuner's metric "
              f"validation {chosen_metric} (class imbalance {found.imbalance:.2f}).",
              f"Measured here ({machine.device}, {machine.cores} cores, bfloat16 {str(machine.bf16).lower()}): "
              f"training images/s on one thread: {rates}.",
              f"Budget {budget_s / 60:.0f} min: search {p.search_s / 60:.1f} min ({p.concurrency} trials at a time, "
              f"{p.trial_epochs} epoch(s) on {p.train_subset or 'all the'} training images, about {p.trial_s:.0f} s a "
              f"trial), then", f"the report, about {p.retrain_s / 60:.1f} min: the winner and the hand designs "
              f"retrained {p.retrain_epochs} epochs over {p.seeds} seeds.", *p.notes, "",
              "Run from the repository root, with the virtualenv active:", f"    {commands['start']}",
              f"Stop it by its id once its {math.ceil(p.search_s / 60)} minutes are up (`nnictl stop ID`): trials "
              f"still running would share the cores with the retraining. Then:", f"    {commands['report']}",
              f"    {commands['predict']}", ""]
    text = experiment_yaml(name, command, p, folder, header)
    result = {"dataset": str(root), "name": name, "classes": found.classes, "image_size": side, "channels": channels,
              "class_imbalance": found.imbalance, "metric": chosen_metric, "mirror_safe": mirror_safe,
              "images": {"train": n_train, "val": n_val, "test": n_test, "val_given": val_given},
              "machine": asdict(machine), "plan": asdict(p), "trial_command": command, "commands": commands,
              "baselines": list(BASELINES)}
    try:
        write_files({folder / "search_space.json": json_text(space), folder / "plan.json": json_text(result),
                     yml: text})
    except OutputError as err:
        raise NewError(str(err)) from None
    try:
        _quiet_nni_load(yml)
    except Exception as err:   # noqa: BLE001 - NNI raises ValueError, TypeError, AssertionError... for bad fields
        raise NewError(f"{yml}: NNI's config validation refuses what was written ({type(err).__name__}: "
                       f"{' '.join(str(err).split())}); this is a bug of experiments.new") from None
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.new", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="a folder of class folders (or train/ [val/] [test/]), a CSV manifest or an .npz")
    p.add_argument("--budget", default="45m", help="search plus the report's retraining: 45m, 1h30m, 2h (default 45m)")
    p.add_argument("--out", help="the experiment's folder (default experiments-<name>)")
    p.add_argument("--mirror-safe", action="store_true", help="a horizontal mirror keeps every image's class: "
                   "allows flips and mirror test-time augmentation (default off)")
    p.add_argument("--image-size", type=int, default=0, help="side the images are resized to (default: the audit's "
                                                             "choice)")
    p.add_argument("--resize-mode", default="crop", help=f"{' or '.join(RESIZE_MODES)} (default crop)")
    p.add_argument("--metric", default="auto", help=f"the tuner's validation metric: auto (balanced accuracy when the "
                   f"classes are imbalanced), {', '.join(METRICS)}")
    p.add_argument("--skip-bad-images", action="store_true", help="train without files that do not decode")
    p.add_argument("--drop-duplicates", action="store_true", help="keep one copy of images in two splits")
    p.add_argument("--seeds", type=int, default=3, help="seeds the report retrains each model over (default 3)")
    p.add_argument("--trial-epochs", type=int, help="epochs a trial trains (default: sized for the budget)")
    p.add_argument("--max-trials", type=int, help="trials at most (default: as many as the search's time fits)")
    p.add_argument("--port", type=int, default=8080, help="the dashboard's port in the printed command")
    p.add_argument("--force", action="store_true", help="write over an existing config.yml")
    args = p.parse_args(argv)
    try:
        result = make(args.dataset, args.budget, args.out, args.mirror_safe, args.image_size, args.resize_mode,
                      args.metric, args.skip_bad_images, args.drop_duplicates, args.seeds, args.port,
                      args.trial_epochs, args.max_trials, args.force,
                      log=lambda line: print(line, file=sys.stderr))
    except (NewError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    plan_ = result["plan"]
    print(f"ok: {result['name']}: {len(result['classes'])} classes, {result['images']['train']} training images at "
          f"{result['channels']}x{result['image_size']}x{result['image_size']}; search {plan_['search_s'] / 60:.1f} "
          f"min ({plan_['trial_epochs']} epoch(s) a trial, {plan_['concurrency']} at a time, at most "
          f"{plan_['max_trials']}), report {plan_['retrain_s'] / 60:.1f} min ({plan_['retrain_epochs']} epochs x "
          f"{plan_['seeds']} seeds x {1 + len(result['baselines'])} models); tuner's metric: validation {result['metric']}")
    print(f"start:   {result['commands']['start']}")
    print(f"report:  {result['commands']['report']}   (after `nnictl stop ID`)")
    print(f"predict: {result['commands']['predict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
