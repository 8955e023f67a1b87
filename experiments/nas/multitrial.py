"""Multi-trial architecture search over the `nas` space: nni.nas's NasExperiment on NNI's local training service, its
dashboard and REST API on 127.0.0.1 only, every trial trained by the harness's own adapter and train().

    python -m experiments.nas.multitrial --dataset fmnist --strategy evolution --trials 20 --duration 10m \\
        --port 8081 --out runs/nas/evolution-fmnist.json --epochs 2 --train_subset 20000

Options this module does not know are the trials' options (`python -m trial --help`: --params FILE, --epochs,
--batch_size, --train_subset, --smoke, --data-dir, ...); they are checked once before NNI starts. Each trial gets the
architecture the strategy sampled and runs `python -m trial`'s adapter (trial/adapter.py) in-process with those
options: the same config precedence (the architecture as the sampled layer), outputs in the trial's NNI_OUTPUT_DIR,
validation metrics per epoch and at the end to the dashboard, and in the final metric the digest of the parameters it
trained and its parameter id (NNI's own record can mis-pair them). When the search ends (trial count, duration, or
the strategy is done) the best trial's architecture is written to --out as an architecture file:
`python -m trial --arch FILE` retrains it, `python -m experiments.report --winner FILE` (or --baseline FILE)
compares it.

Strategies (nni.nas.strategy): `evolution`, regularized evolution (Real et al. 2019, "Regularized Evolution for Image
Classifier Architecture Search", AAAI, arXiv:1802.01548: tournament of --sample-size from a population of
--population, the oldest member dies); `random`, uniform random architectures (the baseline of Li & Talwalkar 2019,
"Random Search and Reproducibility for NAS", UAI). With --trials <= --population, evolution never mutates: it is a
random search. Both run behind nni's Filter middleware: an architecture with a dead cell (trial.nas_space.dead_cell:
its network gives every image the same output; about a fifth of uniform draws) is never trained, nor a network
already submitted (nni deduplicates on every label, inactive ones too: `Unseen`), and the strategy draws again.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

from trial import REPO, adapter
from trial import data as data_mod
from trial.config import SMOKE, ConfigError, load_arch_file, load_params_file, normalize, resolve, save_arch_file
from trial.nas_space import ArchError, check_arch, describe, sample_arch

STRATEGIES = ("evolution", "random")
# trial options the architecture file does not keep: the search's cheaper fidelity and its machine
SEARCH_ONLY = ("dataset", "epochs", "train_subset", "threads", "device", "eval_test")


def evaluate(model, argv: list[str]) -> None:
    """The trial: nni.nas's trial entry calls this with the frozen model of the sampled architecture (unused: the
    adapter builds the same network from the architecture dict, plain torch) and the trial options. Raises
    RuntimeError when the adapter exits non-zero, so NNI marks the trial FAILED."""
    status = adapter.main(argv)
    if status:
        raise RuntimeError(f"python -m trial {' '.join(argv)} exited with status {status} (see the trial's stderr)")


def is_live(model) -> bool:
    """nni.nas Filter middleware's test: False for a sampled architecture (model.sample) with a dead cell, whose
    network would give every image the same output (trial.nas_space.dead_cell; about a fifth of uniform draws)."""
    try:
        check_arch(model.sample)
    except ArchError:
        return False
    return True


class Unseen:
    """nni.nas Filter middleware's test: False for an architecture whose network was submitted before, that is whose
    canonical form (trial.nas_space.check_arch: only the labels its depths make active) was seen; True (and
    remembered) otherwise. nni's own deduplication compares every label, the inactive ones too (the cells beyond a
    stage's depth), so mutations of those labels trained one network again and again, with the same seed to the same
    result: 3 of the 11 trials of an 8-minute CIFAR-10 evolution run here. Call only on live architectures (is_live)."""

    def __init__(self):
        self.seen: set[str] = set()

    def __call__(self, model) -> bool:
        key = json.dumps(check_arch(model.sample), sort_keys=True)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def make_strategy(name: str, seed: int, population: int, sample_size: int):
    """The strategy behind nni's Filter middleware (is_live, then Unseen): dead architectures and networks already
    submitted are never trained; they reach the strategy as invalid models without a metric, and it draws again.
    Raises ValueError for an unknown name."""
    from nni.nas import strategy
    from nni.nas.strategy.middleware import Chain, Filter
    if name == "evolution":
        base = strategy.RegularizedEvolution(population_size=population, sample_size=sample_size, seed=seed)
    elif name == "random":
        base = strategy.Random(seed=seed)
    else:
        raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    unseen = Unseen()
    return Chain(base, Filter(lambda model: is_live(model) and unseen(model)))


def check_trial_options(argv: list[str]) -> dict:
    """Resolve the trials' options with a random architecture, as each trial will (ConfigError, OSError or SystemExit
    for options `python -m trial` refuses); returns the training keys they set (params file, then flags)."""
    args = adapter.parse_args(argv)
    given = {**(load_params_file(args.params) if args.params else {}),
             **(load_arch_file(args.arch) if args.arch else {}), **adapter.cli_overrides(args)}
    arch = {"family": "nas", "nas_arch": sample_arch(random.Random(0))}
    resolve(given, arch, SMOKE if args.smoke else {})
    return {k: v for k, v in normalize(given).items() if k not in ("family", "nas_arch")}


def run(dataset: str, strategy: str, trials: int, duration: str, port: int, trial_argv: list[str], out: Path,
        concurrency: int = 2, seed: int = 0, population: int = 10, sample_size: int = 3,
        workdir: str | None = None) -> dict:
    """Run the search to its end, write the best architecture to `out`, return a summary dict (experiment id, best
    trial id, its validation accuracy, the architecture, trial counts). Raises ConfigError for trial options the
    harness refuses, RuntimeError when no trial succeeded."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment

    from experiments.launch import secure
    from experiments.results.export import load_experiment, ranked_finished

    from . import multitrial  # `evaluate` by its module path: run as __main__, NNI would pickle it by value
    from .space import NasSpace
    workdir = str(Path(workdir).resolve()) if workdir else None
    if Path.cwd().resolve() != REPO.resolve():
        # NNI runs nas trials in the launcher's working directory, and they import trial/ and experiments/ (paths
        # in the trial options are then relative to the repository)
        os.chdir(REPO)
    argv = ["--dataset", dataset, *trial_argv]
    if "--threads" not in trial_argv:   # concurrent trials share the cores: a trial with all of them is much slower
        argv += ["--threads", str(max(1, (os.cpu_count() or 1) // concurrency))]
    training = check_trial_options(argv)
    info = data_mod.INFO[dataset]
    exp = NasExperiment(NasSpace(info.shape, len(info.classes)), FunctionalEvaluator(multitrial.evaluate, argv=argv),
                        make_strategy(strategy, seed, population, sample_size))
    exp.config.experiment_name = f"nas-{strategy}-{dataset}"
    exp.config.max_trial_number = trials
    exp.config.max_experiment_duration = duration
    exp.config.trial_concurrency = concurrency
    if workdir:
        exp.config.experiment_working_directory = workdir
    print(f"dashboard and REST API on http://127.0.0.1:{port} only; experiment {exp.id}", file=sys.stderr, flush=True)
    try:
        with secure.protected():   # the manager NasExperiment starts inherits the preload that keeps it on loopback
            exp.run(port=port)
    finally:
        exp.stop()
    root = Path(exp.config.canonical_copy().experiment_working_directory) / exp.id
    _, table = load_experiment(root)
    finished = ranked_finished(table)
    if finished.empty:
        raise RuntimeError(f"experiment {exp.id}: no trial succeeded ({len(table)} trials); their logs are under {root}")
    best = finished.iloc[0]
    # the trial's own record of what it trained (trial.json), not NNI's pairing of parameters and trials
    arch = json.loads((Path(best["trial_dir"]) / "trial.json").read_text())["sampled_params"]["nas_arch"]
    # the file is shared: its comment names the path from the repository, not this machine's absolute one
    comment = (f"architecture chosen by nni.nas {strategy} on {dataset}: experiment {exp.id}, trial "
               f"{best['trial_id']}, validation accuracy {best['final_default']:.4f} after "
               f"{int(best.get('final_epochs_run', 0) or 0)} epochs, {len(table)} trials. Retrain: "
               f"python -m trial --arch {out.relative_to(REPO) if out.is_relative_to(REPO) else out.name}")
    training = {k: v for k, v in training.items() if k not in SEARCH_ONLY}
    save_arch_file(out, arch, {"dataset": dataset, **training}, comment)
    return {"experiment_id": exp.id, "experiment_dir": str(root), "best_trial": best["trial_id"],
            "best_val_accuracy": float(best["final_default"]), "nas_arch": arch,
            "trial_counts": table["status"].value_counts().to_dict(), "out": str(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.nas.multitrial", description=__doc__.split("\n\n")[0],
                                epilog="Other options go to every trial (python -m trial --help).")
    p.add_argument("--dataset", required=True, choices=sorted(data_mod.INFO))
    p.add_argument("--strategy", choices=STRATEGIES, default="evolution")
    p.add_argument("--trials", type=int, default=20, help="maximum number of trials")
    p.add_argument("--duration", default="30m", help="maximum experiment duration, NNI's format (10m, 1h)")
    p.add_argument("--port", type=int, default=8080, help="dashboard and REST API port, on 127.0.0.1")
    p.add_argument("--concurrency", type=int, default=2, help="trials at once")
    p.add_argument("--population", type=int, default=10, help="evolution: population size")
    p.add_argument("--sample-size", type=int, default=3, help="evolution: tournament size")
    p.add_argument("--seed", type=int, default=0, help="the strategy's seed")
    p.add_argument("--workdir", help="experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--out", help="architecture file to write (default runs/nas/<strategy>-<dataset>.json)")
    args, trial_argv = p.parse_known_args(argv)
    out = Path(args.out or f"runs/nas/{args.strategy}-{args.dataset}.json").resolve()
    try:
        summary = run(args.dataset, args.strategy, args.trials, args.duration, args.port, trial_argv, out,
                      args.concurrency, args.seed, args.population, args.sample_size, args.workdir)
    except (ConfigError, OSError) as err:
        print(f"error: invalid trial options: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"experiment {summary['experiment_id']}: best trial {summary['best_trial']}, validation accuracy "
          f"{summary['best_val_accuracy']:.4f} ({describe(summary['nas_arch'])})")
    print(f"architecture: {summary['out']}  (retrain: python -m trial --arch {summary['out']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
