"""One-shot architecture search over the `nas` space: nni.nas trains one supernet of every candidate in this process
(no NNI manager, no dashboard; Lightning's progress bar shows each epoch's steps, loss and accuracy), then the chosen
architecture is written as an architecture file that `python -m trial --arch FILE` retrains from scratch and
`python -m experiments.report --winner FILE` (or --baseline FILE) compares.

    python -m experiments.nas.oneshot --dataset fmnist --strategy darts --epochs 10 --out runs/nas/darts-fmnist.json
    python -m experiments.nas.oneshot --dataset fmnist --strategy darts --epochs 50 --max-time 11 \
        --params recipes/nas_darts.json --out runs/nas/darts-fmnist.json     # a wall-clock budget; a retraining recipe

Data come from trial/data.py as for every trial: normalised tensors, the validation split carved from the training
split (--val-size, --split-seed); the test split is never read. No augmentation. Strategies (nni.nas.strategy):

  darts   DARTS (Liu et al. 2019, "DARTS: Differentiable Architecture Search", arXiv:1806.09055): a softmax over each
          choice's candidates; network weights step on training batches, architecture weights (Adam, --arc-lr) on
          validation batches, alternately (first order); the export takes each choice's largest weight, an op's
          largest but `zero`'s (DARTS' derivation).
  gumbel  GumbelDARTS: the same with Gumbel-softmax samples of the choices (SNAS, Xie et al. 2019, arXiv:1812.09926),
          temperature annealed from 1 to 0.33.
  random  RandomOneShot (single-path one-shot, Guo et al. 2020, "Single Path One-Shot NAS with Uniform Sampling",
          arXiv:1904.00420): one uniformly drawn live architecture (trial.nas_space.dead_cell: nni's filter draws
          again) trains per step. Its own export is one more random
          draw, so --candidates architectures are drawn and each is scored on the validation split with the
          supernet's weights after re-estimating its BatchNorm statistics on training batches (SPOS' recalibration);
          the best is kept.

The validation accuracy random writes with its choice is that of the supernet's weights, a ranking signal only: the
architecture trains from scratch afterwards.

Every cell of the supernet is gated (x + g * cell(x), g from 0: trial.nas_space's `cell_gate`, ReZero) unless
--no-cell-gate: without the gate RandomOneShot's supernet stayed at chance on Fashion-MNIST here
(results/fmnist-nas-comparison/README.md). The architecture file then carries `nas_cell_gate: true`, so the
chosen network retrains with the gates it was searched with.
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trial import data as data_mod
from trial.config import ConfigError, TrialConfig, load_params_file, normalize, save_arch_file
from trial.inference import evaluate
from trial.nas_space import ArchError, check_arch, describe, is_op, sample_arch
from trial.train import pick_device

STRATEGIES = ("darts", "gumbel", "random")
RECALIBRATION_BATCHES = 20   # training batches that re-estimate a subnet's BatchNorm statistics


def is_live_sample(sample: dict) -> bool:
    """RandomOneShot's filter: False for a drawn architecture (labels -> choices) with a dead cell
    (trial.nas_space.dead_cell), whose network gives every image the same output."""
    try:
        check_arch(sample)
    except ArchError:
        return False
    return True


def make_strategy(name: str, arc_lr: float):
    from nni.nas import strategy
    if name == "darts":
        return strategy.DARTS(arc_learning_rate=arc_lr)
    if name == "gumbel":
        return strategy.GumbelDARTS(arc_learning_rate=arc_lr)
    if name == "random":
        return strategy.RandomOneShot(filter=is_live_sample)
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")


@torch.no_grad()
def subnet_accuracy(supernet: nn.Module, arch: dict, d: data_mod.DeviceData, batch_size: int,
                    device: torch.device) -> float:
    """Validation accuracy (a fraction) of architecture `arch` run on a single-path supernet (RandomOneShot's): a copy
    whose sampling modules are set to `arch` and whose BatchNorm statistics are re-estimated (cumulative average) over
    RECALIBRATION_BATCHES training batches of `batch_size`, scored by trial.inference.evaluate. (nni's own
    weight-preserving freeze fails here: MixedConv2d copies a `bias` key into a conv that has none.)"""
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
    net = copy.deepcopy(supernet).to(device)
    memo = dict(arch)
    for module in net.modules():
        if isinstance(module, BaseSuperNetModule):
            memo.update(module.resample(memo=memo))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    net.train()
    order = torch.randperm(len(d.train_x))[:RECALIBRATION_BATCHES * batch_size]
    for start in range(0, len(order), batch_size):
        net(d.train_x[order[start:start + batch_size]].to(device))
    return evaluate(net, d.val_x.to(device), d.val_y.to(device), F.cross_entropy)["accuracy"]


def without_zero_ops(exported: dict, probs: dict) -> dict:
    """DARTS' derivation of a discrete architecture (Liu et al. 2019, section 2.4: each node keeps "the strongest
    operation", `none` excluded): nni's export (argmax over every candidate, zero included) with each op label's
    choice replaced by its most probable candidate other than `zero`. `probs`: nni's export_probs, label -> {candidate:
    probability}. A zero op could otherwise make a dead cell (trial.nas_space.dead_cell)."""
    arch = dict(exported)
    for label, candidates in probs.items():
        if label in arch and is_op(label):
            arch[label] = max((p, name) for name, p in candidates.items() if name != "zero")[1]
    return arch


def search(dataset: str, strategy: str, epochs: int, batch_size: int = 64, learning_rate: float = 1e-3,
           weight_decay: float = 0.0, arc_lr: float = 3e-4, val_size: int = 5000, split_seed: int = 0,
           train_subset: int = 0, candidates: int = 20, seed: int = 0, data_dir: str | None = None,
           workdir: str | None = None, progress: bool = True, max_minutes: float = 0.0, cell_gate: bool = True) -> dict:
    """Train the supernet with `strategy` for `epochs` and choose an architecture. Network weights: Adam at
    `learning_rate` with `weight_decay` (nni's Classification evaluator), batches of `batch_size`; `arc_lr`: the
    architecture weights' Adam learning rate (DARTS, GumbelDARTS). `max_minutes` (> 0): the supernet's training
    stops after that many minutes of wall time even before `epochs` (Lightning's max_time), so searches can be given
    equal budgets. `cell_gate`: every cell of the supernet gated (trial.nas_space.Cell). Returns {"nas_arch": the choice, labels ->
    candidates, "val_accuracy": for random its validation accuracy on the supernet, else None, "seconds": wall
    time}. Raises trial.data.DatasetError for missing data."""
    import nni
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from torch.utils.data import TensorDataset

    from .space import NasSpace
    random.seed(seed)
    torch.manual_seed(seed)
    start = time.perf_counter()
    d = data_mod.prepare(dataset, val_size, split_seed, torch.device("cpu"), train_subset, data_dir, with_test=False)
    # nni.trace: nni serialises the evaluator by its arguments
    train = DataLoader(nni.trace(TensorDataset)(d.train_x, d.train_y), batch_size=batch_size, shuffle=True)
    val = DataLoader(nni.trace(TensorDataset)(d.val_x, d.val_y), batch_size=batch_size)
    evaluator = Classification(learning_rate=learning_rate, weight_decay=weight_decay, train_dataloaders=train,
                               val_dataloaders=val, max_epochs=epochs, num_classes=len(d.info.classes),
                               enable_checkpointing=False, logger=False, enable_progress_bar=progress,
                               **({"max_time": {"minutes": max_minutes}} if max_minutes > 0 else {}))
    exp = NasExperiment(NasSpace(d.info.shape, len(d.info.classes), cell_gate=cell_gate), evaluator, make_strategy(strategy, arc_lr))
    if workdir:
        exp.config.experiment_working_directory = str(Path(workdir).resolve())
    try:
        exp.run()
        arch = None
        if strategy != "random":
            arch = exp.export_top_models(formatter="dict")[0]
            arch = without_zero_ops(arch, exp.strategy.oneshot_module.export_probs())
    finally:
        exp.stop()
    supernet, device = exp.strategy.supernet.cpu(), pick_device("auto")
    if strategy == "random":
        rng = random.Random(seed)
        scored = []
        for i in range(candidates):
            arch = sample_arch(rng)
            scored.append((subnet_accuracy(supernet, arch, d, batch_size, device), i, arch))
            print(f"[oneshot] candidate {i + 1}/{candidates}: validation accuracy {scored[-1][0]:.4f} with the "
                  f"supernet's weights", file=sys.stderr, flush=True)
        accuracy, _, arch = max(scored, key=lambda t: (t[0], -t[1]))
    else:   # a mixture of every candidate, not one path: its accuracy is the progress bar's val_acc
        accuracy = None
    return {"nas_arch": arch, "val_accuracy": accuracy, "seconds": time.perf_counter() - start}


def retraining_recipe(path: str | None, dataset: str, cell_gate: bool = False) -> dict:
    """The params the architecture file carries: {"dataset"} plus the training keys of the params file at `path`
    (checked by trial.config.normalize), plus {"nas_cell_gate": True} with `cell_gate`. Raises OSError for an
    unreadable file, ConfigError for unknown keys or bad values, or for a file that sets what the search chooses
    (family, nas_arch), the space it searched (nas_cell_gate) or a different dataset."""
    recipe = load_params_file(path) if path else {}
    chosen = sorted(set(recipe) & {"family", "nas_arch", "nas_cell_gate"})
    if chosen:
        raise ConfigError(f"params file {path} sets {', '.join(chosen)}: the search chooses those (the gate: "
                          "--cell-gate / --no-cell-gate); keep only the training recipe there")
    if recipe.get("dataset", dataset) != dataset:
        raise ConfigError(f"params file {path} is for dataset {recipe['dataset']!r}, the search for {dataset!r}")
    return {**normalize(recipe), "dataset": dataset, **({"nas_cell_gate": True} if cell_gate else {})}


def main(argv=None) -> int:
    defaults = TrialConfig()
    p = argparse.ArgumentParser(prog="python -m experiments.nas.oneshot", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(data_mod.INFO))
    p.add_argument("--strategy", choices=STRATEGIES, default="darts")
    p.add_argument("--epochs", type=int, default=10, help="supernet training epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="network weights (Adam)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--arc-lr", type=float, default=3e-4, help="darts, gumbel: architecture weights (Adam; DARTS' 3e-4)")
    p.add_argument("--val-size", type=int, default=defaults.val_size, help="validation images carved from training")
    p.add_argument("--split-seed", type=int, default=defaults.split_seed)
    p.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--candidates", type=int, default=20, help="random: architectures scored on the trained supernet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--max-time", type=float, default=0.0, metavar="MINUTES",
                   help="stop the supernet's training after this many minutes even before --epochs (0: no limit)")
    p.add_argument("--params", metavar="FILE", help="training recipe (keys of trial/config.py) the architecture file "
                   "carries, so that `python -m trial --arch FILE` retrains with it (default: the harness defaults)")
    p.add_argument("--cell-gate", action=argparse.BooleanOptionalAction, default=True,
                   help="gate every cell of the supernet, x + g * cell(x) with g from 0 (ReZero; default: on); the "
                   "architecture file then retrains with the gates")
    p.add_argument("--data-dir")
    p.add_argument("--workdir", help="where nni keeps the run's checkpoint (default ~/nni-experiments)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", help="architecture file to write (default runs/nas/<strategy>-<dataset>.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/nas/{args.strategy}-{args.dataset}.json")
    try:
        recipe = retraining_recipe(args.params, args.dataset, args.cell_gate)
    except (OSError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = search(args.dataset, args.strategy, args.epochs, args.batch_size, args.learning_rate,
                        args.weight_decay, args.arc_lr, args.val_size, args.split_seed, args.train_subset,
                        args.candidates, args.seed, args.data_dir, args.workdir, not args.no_progress,
                        args.max_time, args.cell_gate)
    except data_mod.DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    score = "" if result["val_accuracy"] is None else \
        f"; validation accuracy {result['val_accuracy']:.4f} on the supernet (a ranking signal, not a trained result)"
    limit = f" (at most {args.max_time:g} min)" if args.max_time > 0 else ""
    gate = ", cells gated (nas_cell_gate)" if args.cell_gate else ""
    comment = (f"architecture chosen by nni.nas one-shot {args.strategy} on {args.dataset}: {args.epochs} supernet "
               f"epochs{limit}{gate}{score}, {result['seconds']:.0f} s"
               f"{'; training recipe from ' + args.params if args.params else ''}. "
               f"Retrain: python -m trial --arch {out}")
    save_arch_file(out, result["nas_arch"], recipe, comment)
    print(f"{args.strategy}: {describe(result['nas_arch'])}{score}; {result['seconds']:.0f} s")
    print(f"architecture: {out}  (retrain: python -m trial --arch {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
