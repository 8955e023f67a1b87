"""Retrain a configuration from scratch over several seeds and evaluate each run on the test split.

Two protocols:
  train_val   train on train + validation for a fixed number of epochs and keep the last weights (as the CIFAR-10
              study did); validation accuracy is then not a held-out number and is not used (scored after the last
              epoch only, except for the plateau schedule, which reads it every epoch).
  early_stop  train on train, early-stop on validation, keep the best-validation weights.
Each run writes its checkpoint and outputs under OUT/<name>/seed<k>/ and returns the trained model with its test
metrics (scikit-learn) and predictions, so the report needs nothing back from disk.

    python -m experiments.results.retrain baselines/deep_cnn.json --dataset fmnist --seeds 0 1 2 --epochs 15 --out runs/base

The command line also writes OUT/summary.json: the protocol (dataset, protocol, epochs, seeds, val_size, split_seed)
and the group's summary in a report's shape, so that experiments.results.compare can set it beside a report's winner
retrained elsewhere under the same protocol.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import multiprocessing as mp
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from trial import data as data_mod
from trial.config import SMOKE, ConfigError, TrialConfig, load_params_file, resolve
from trial.data import DatasetError
from trial.files import OutputError, json_text, read_json, remove_file, writable_dir, write_file, write_files
from trial.folder import FolderOptions
from trial.precision import at_chance
from trial.train import pick_device, train

from .evaluate import classification_metrics, load_checkpoint, predict_proba

PROTOCOLS = ("train_val", "early_stop")


def check_seeds(seeds) -> list[int]:
    """The seeds as a list; ValueError for none, or for a seed given twice: its two runs would be one run counted
    twice in the mean, the std and Welch's test (the same seed trains the same weights)."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("no seeds given")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"seed(s) {', '.join(map(str, twice))} given twice in {seeds}: a seed retrains the same run, "
                         f"which the mean, std and Welch's test would count as two; give each seed once")
    return seeds


def protocol_overrides(protocol: str, epochs: int | None, patience: int) -> dict:
    """The config keys a protocol sets (keep, patience, epochs); ValueError for an unknown protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    base = {"epochs": epochs, "eval_test": False} if epochs else {"eval_test": False}  # test is scored below
    if protocol == "train_val":
        return {**base, "keep": "last", "patience": 0}
    return {**base, "keep": "best", "patience": patience}


def dataset_keys(cfg: TrialConfig) -> dict:
    """The keys that make cfg's data what it is: the dataset, and for a dataset given by path the keys that shape its
    images and splits (image_size, resize_mode, test_fraction, mirror_safe, ...). Every group of a report trains on
    them."""
    keys = {"dataset": cfg.dataset}
    if cfg.dataset not in data_mod.INFO:
        keys.update(dataclasses.asdict(FolderOptions.of(cfg)))
    return keys


def on_dataset(params: dict, keys: dict) -> tuple[dict, list[str]]:
    """`params` moved onto the data `keys` describe (dataset_keys), and what else had to change, one note each. A
    hand design written for a benchmark (baselines set "dataset": "cifar10", airbench's mirror test-time augmentation
    and flips) keeps everything but a mirror on data not said to be mirror-safe: tta mirror* becomes none and
    augmentation crop_flip becomes crop (trial.config refuses a mirror there)."""
    out, notes = {**params, **keys}, []
    if keys["dataset"] not in data_mod.INFO and not keys.get("mirror_safe"):
        tta, augmentation = str(out.get("tta", "none")), out.get("augmentation")
        if tta.startswith("mirror"):
            out["tta"] = "none"
            notes.append(f"tta {tta} -> none")
        if augmentation == "crop_flip":
            out["augmentation"] = "crop"
            notes.append("augmentation crop_flip -> crop")
    return out, notes


def merged_train_val(d: data_mod.DeviceData) -> data_mod.DeviceData:
    """Train on train + validation; the validation tensors stay only so the loop can log a (non-held-out) number."""
    return data_mod.DeviceData(torch.cat([d.train_x, d.val_x]), torch.cat([d.train_y, d.val_y]), d.val_x, d.val_y,
                               d.test_x, d.test_y, d.info)


def finished_run(run_dir: Path, config: dict) -> tuple[dict, dict] | None:
    """(final metrics, test metrics) of a run that already finished in `run_dir` with exactly `config`, else None:
    an interrupted report picks up where it stopped instead of training every finished seed again. A key one side
    lacks counts as its default (a field added to TrialConfig after the run, or one to_dict leaves out when unset,
    like nas_arch), which the run then had. A run that a signal stopped (final.json `interrupted`) is not finished."""
    files = [run_dir / n for n in ("config.json", "final.json", "test_metrics.json", "test_predictions.npz", "best.pt")]
    if not all(f.is_file() for f in files):
        return None
    try:
        def same(cfg: dict) -> dict:
            # threads change the speed, not the run; so does val_every_epoch, which only a config that keeps the
            # last weights may turn off (trial.config), and then it changes what is logged, not what is trained
            return {k: v for k, v in json.loads(json.dumps(cfg)).items() if k not in ("threads", "val_every_epoch")}
        saved, wanted = same(read_json(files[0])), same(config)
        defaults = same(dataclasses.asdict(TrialConfig()))     # every field, nas_arch (None) included

        def full(cfg: dict) -> dict:
            return {k: cfg.get(k, defaults.get(k)) for k in saved.keys() | wanted.keys()}
        final = read_json(files[1])
        if full(saved) != full(wanted) or final.get("interrupted"):
            return None
        return final, read_json(files[2])
    except (OSError, ValueError):
        return None


def retrain(params: dict, seeds, out_dir: str | Path, protocol: str = "train_val", epochs: int | None = None,
            patience: int = 3, extra: dict | None = None, data_dir=None, progress: bool = True, jobs: int = 1,
            data: data_mod.DeviceData | None = None) -> list[dict]:
    """Train `params` once per seed and score each run on the test split. Returns one dict per seed: seed, protocol,
    dir, config (resolved, dict), final (the training metrics), test (classification_metrics), proba (float32
    [N_test, classes] numpy) and model (the trained nn.Module on the CPU, eval mode).

    `data`, splits already prepared for this protocol (see protocol_data), is reused by every seed when jobs is 1.
    `jobs` seeds train at once in separate processes, each with cpu_count // jobs torch threads, so that together they
    do not oversubscribe the cores. The search's `threads` is not kept: it described a trial sharing the machine, not
    this run. Raises ValueError for a seed given twice, ConfigError for parameters the harness refuses, DatasetError
    for missing data, trial.files.OutputError for an output that cannot be written."""
    seeds = check_seeds(seeds)
    jobs = max(1, min(jobs, len(seeds)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    overrides = {**protocol_overrides(protocol, epochs, patience), "threads": threads, **(extra or {})}
    if protocol == "train_val" and "val_every_epoch" not in overrides \
            and resolve(params, overrides).lr_schedule != "plateau":
        # the validation images are training images here: scoring them every epoch (with test-time augmentation up
        # to a sixth of an epoch) tells nothing; the plateau schedule alone reads that number
        overrides["val_every_epoch"] = False
    tasks = [(params, overrides, seed, Path(out_dir) / f"seed{seed}", protocol, data_dir) for seed in seeds]
    if jobs == 1:
        data = data if data is not None else protocol_data(resolve(params, overrides), protocol, data_dir)
        return [_run_seed(*t, progress=progress, data=data) for t in tasks]
    runs = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_seed, *t, progress=False): t[2] for t in tasks}
        for n, fut in enumerate(as_completed(futures), 1):
            run = fut.result()
            runs[run["seed"]] = run
            print(f"[retrain] {Path(out_dir).name} seed {run['seed']}: test accuracy {run['test']['accuracy']:.4f}, "
                  f"{run['final'].get('train_seconds', 0):.0f}s ({n}/{len(tasks)} seeds done)", file=sys.stderr)
    return [runs[seed] for seed in seeds]


def protocol_data(cfg: TrialConfig, protocol: str, data_dir=None) -> data_mod.DeviceData:
    """The splits a protocol trains on, on cfg's device: train_val merges validation into training."""
    data = data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, pick_device(cfg.device), cfg.train_subset,
                            data_dir, options=FolderOptions.of(cfg))
    return merged_train_val(data) if protocol == "train_val" else data


def _run_seed(params: dict, overrides: dict, seed: int, run_dir: Path, protocol: str, data_dir, progress: bool = True,
              data: data_mod.DeviceData | None = None) -> dict:
    cfg = resolve(params, overrides, {"seed": seed})
    done = finished_run(run_dir, cfg.to_dict())
    if done is not None:
        final, metrics = done
        print(f"{run_dir}: already finished with this config, reusing it (delete the folder to retrain)",
              file=sys.stderr)
        model = load_checkpoint(run_dir / "best.pt")[0]
        proba = np.load(run_dir / "test_predictions.npz")["proba"]
    else:
        # a test score left by an earlier run in this folder is not this run's (finished_run would take it)
        remove_file(run_dir / "test_metrics.json")
        data = data if data is not None else protocol_data(cfg, protocol, data_dir)
        # in parallel processes one line per epoch (progress bars of several processes would garble each other)
        report = None if progress else (lambda m: print(
            f"[retrain] {run_dir.parent.name} seed {seed}: epoch {m['epoch']}/{cfg.epochs}, loss {m['train_loss']:.4f}, "
            f"{m['epoch_seconds']:.0f}s", file=sys.stderr, flush=True))
        result = train(cfg, report, data=data, output_dir=run_dir, progress=progress)
        final, model = result.metrics, result.model
        proba = predict_proba(model, data.test_x, tta=cfg.tta)   # float32, as the exported model runs
        y = data.test_y.cpu().numpy()
        metrics = classification_metrics(y, proba, data.info.classes)
        predictions = io.BytesIO()
        np.savez_compressed(predictions, proba=proba, y=y)
        # test_metrics.json last: with it there, the run is finished (finished_run)
        write_files({run_dir / "test_predictions.npz": predictions.getvalue(),
                     run_dir / "test_metrics.json": json_text(metrics)})
    return {"seed": seed, "protocol": protocol, "dir": str(run_dir), "config": cfg.to_dict(), "final": final,
            "test": metrics, "proba": proba, "model": model.cpu().eval()}


def balanced_accuracy(metrics: dict) -> float:
    """A run's test balanced accuracy: its own, or from its confusion matrix (test metrics written before it was
    recorded): the mean recall over the classes that have test images."""
    if "balanced_accuracy" in metrics:
        return metrics["balanced_accuracy"]
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    support = cm.sum(1)
    return float((np.diag(cm)[support > 0] / support[support > 0]).mean())


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Test accuracy, balanced accuracy and macro F1: mean, std (ddof 1) and per seed; ROC AUC mean, parameters,
    mean training seconds, and the seeds whose training diverged (a non-finite loss: their test accuracy is that of a
    broken network, not a result) with the harness's reason, the seeds whose test accuracy is at chance (a network
    that learnt nothing: `learned_nothing`), and the seeds whose first bfloat16 epoch was at chance and that trained
    again in float32 (trial/precision.py). ValueError for runs of one seed given twice (one run
    counted twice)."""
    check_seeds(r["seed"] for r in runs)
    acc = [r["test"]["accuracy"] for r in runs]
    balanced = [balanced_accuracy(r["test"]) for r in runs] if all("confusion_matrix" in r["test"] or
                                                                     "balanced_accuracy" in r["test"] for r in runs) \
        else None
    f1 = [r["test"]["macro_f1"] for r in runs]
    diverged = [r for r in runs if r["final"].get("diverged")]
    chance = [r["seed"] for r in runs if not r["final"].get("diverged") and learned_nothing(r["test"])]
    return {"test_accuracy_mean": float(np.mean(acc)), "test_accuracy_std": _std(acc), "test_accuracies": acc,
            **({"balanced_accuracy_mean": float(np.mean(balanced)), "balanced_accuracy_std": _std(balanced),
                "balanced_accuracies": balanced} if balanced is not None else {}),
            "macro_f1_mean": float(np.mean(f1)), "macro_f1_std": _std(f1), "macro_f1s": f1,
            "roc_auc_mean": float(np.mean([r["test"]["roc_auc_ovr"] for r in runs])),
            "params": runs[0]["final"]["params"],
            "train_seconds_mean": float(np.mean([r["final"]["train_seconds"] for r in runs])),
            "diverged_seeds": [r["seed"] for r in diverged],
            "diverged_error": diverged[0]["final"].get("error", "training diverged") if diverged else None,
            "chance_seeds": chance,
            "float32_fallback_seeds": [r["seed"] for r in runs if r["final"].get("amp_fallback")]}


def learned_nothing(metrics: dict) -> bool:
    """Whether a run's test accuracy is at chance (trial.precision.at_chance on the test split's class counts, from
    its confusion matrix): a network that learnt nothing, whose figure is not a result of its model. False where the
    metrics carry no confusion matrix."""
    if "confusion_matrix" not in metrics:
        return False
    support = torch.as_tensor(np.asarray(metrics["confusion_matrix"]).sum(1), dtype=torch.long)
    return bool(support.sum()) and at_chance(metrics["accuracy"], support)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("params", help="a params file (a baseline, or a winner's config.json)")
    p.add_argument("--dataset", help="a dataset name or the path of a folder, manifest or .npz (a hand design loses "
                                      "a mirror there: not said to be mirror-safe)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--protocol", choices=PROTOCOLS, default="train_val")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--data-dir")
    p.add_argument("--smoke", action="store_true", help="tiny subset, one epoch: for CI")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, in separate processes")
    p.add_argument("--out", default="runs/retrain")
    p.add_argument("--name", help="the group's name in OUT/summary.json (default: the params file's name, e.g. "
                                  "baseline_resnet for baselines/resnet.json, as a report names it)")
    args = p.parse_args(argv)
    try:
        check_seeds(args.seeds)
    except ValueError as err:
        p.error(f"--seeds: {err}")
    extra = SMOKE if args.smoke else {}
    try:
        params = load_params_file(args.params)
    except (OSError, ConfigError) as err:
        print(f"error: cannot read params file {args.params}: {err.strerror or err}" if isinstance(err, OSError)
              else f"error: {err}", file=sys.stderr)
        return 2
    if args.dataset:   # a hand design written for a benchmark, on another dataset: what changes is said
        params, notes = on_dataset(params, {"dataset": args.dataset, **({} if args.dataset in data_mod.INFO else
                                                                        {"mirror_safe": False})})
        for note in notes:
            print(f"[retrain] on {args.dataset}: {note} (not mirror-safe)", file=sys.stderr)
    try:
        writable_dir(args.out)   # a read-only folder is refused before the training, not after it
        runs = retrain(params, args.seeds, args.out, args.protocol, args.epochs, args.patience, extra, args.data_dir,
                       jobs=args.jobs)
    except (ConfigError, DatasetError, OutputError) as err:   # each one line: the key, the data, the path
        print(f"error: {err}", file=sys.stderr)
        return 2
    name = args.name or f"baseline_{Path(args.params).stem}"
    group = summarise(runs)
    first = runs[0]["config"]
    summary = {"dataset": first["dataset"], "protocol": args.protocol, "seeds": list(args.seeds),
               "epochs": first["epochs"], "smoke": args.smoke, "val_size": first["val_size"],
               "split_seed": first["split_seed"], "params_file": args.params,
               "test_accuracy_per_seed": {name: dict(zip(map(str, args.seeds), group["test_accuracies"]))},
               "groups": {name: group},
               "command": "python -m experiments.results.retrain "
                          + " ".join(map(shlex.quote, argv))}
    try:
        write_file(Path(args.out) / "summary.json", json_text(summary))
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    accs = np.array([r["test"]["accuracy"] for r in runs])
    print(f"test accuracy over {len(runs)} seeds: {accs.mean():.4f} +- {accs.std(ddof=1) if len(accs) > 1 else 0:.4f}"
          f"  ({', '.join(f'{a:.4f}' for a in accs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
