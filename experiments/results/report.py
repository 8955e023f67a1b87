"""One command from a finished (or running) NNI experiment to a result a reviewer can check.

    python -m experiments.report EXPERIMENT_ID [--root DIR] [--top-k 1] [--seeds 0 1 2] [--protocol train_val]
    python -m experiments.report --winner runs/nas/darts-fmnist.json --baseline baselines/simple_cnn.json

It exports every trial (results.export), retrains the top-k configurations and the baseline(s) from scratch under
the same protocol, data, epoch budget and seeds (results.retrain), compares them (mean +- std, Welch's t-test and
a 95% confidence interval of the difference), draws the figures (results.plots), exports the winner
(results.evaluate), and writes a self-contained directory: report.md, trials.csv, summary.json, runs.csv, *.png,
model/ and the retraining runs. `--smoke` retrains on a tiny subset for one epoch (CI). `--winner FILE` adds params
files as winners, e.g. the architecture an nni.nas search chose (experiments/nas); without an experiment id they are
the winners and the report has no search section. An architecture file is a params file, so `--baseline` takes it too.

On a dataset given by path (a folder of images, a CSV manifest, an .npz; experiments.new makes such an experiment),
every group trains on the winner's images: the baselines, written for a benchmark ("dataset": "cifar10"), take the
winner's dataset and the keys that shape its images (image_size, resize_mode, test_fraction, mirror_safe, ...), and
lose a mirror the data is not said to allow (retrain.on_dataset; the report says so). The confusion matrix, the
per-class table and the exported model use the dataset's class names; where its classes are imbalanced (largest /
smallest above trial.folder.IMBALANCE_FLAG) or the search tuned balanced accuracy (`metric`), the report leads with
balanced accuracy and macro F1, and Welch's test and the confidence intervals compare balanced accuracy.
"""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trial import data as data_mod
from trial.config import SMOKE, ConfigError, load_params_file, normalize, resolve
from trial.data import DatasetError
from trial.files import OutputError, json_text, read_json, writable_dir, write_file
from trial.folder import IMBALANCE_FLAG

from . import pareto as pareto_mod
from . import plots
from .compare import accuracy_cells, difference_text, welch
from .evaluate import export_model
from .export import END_STATES, STOPPED_WITH_EXPERIMENT, experiment_dir, load_experiment, ranked_finished
from .retrain import (
    PROTOCOLS,
    balanced_accuracy,
    check_seeds,
    dataset_keys,
    on_dataset,
    protocol_data,
    protocol_overrides,
    retrain,
    summarise,
)


class ReportError(RuntimeError):
    """A report that cannot be made: an experiment with no finished trial (the message says whether to wait or that
    none will come), an input that is missing or refused (a winner or baseline file, the seeds); one line."""


def read_params(path, role: str) -> dict:
    """A winner or baseline params file, read and its keys checked alone (names, types, ranges; how they combine is
    checked once the report's dataset is known). Raises ReportError for a file that cannot be read, ConfigError
    naming the file for one the harness refuses."""
    try:
        params = load_params_file(str(path))
    except OSError as err:
        raise ReportError(f"{role} file {path}: {err.strerror or err}") from None
    try:
        normalize(params)
    except ConfigError as err:
        raise ConfigError(f"{role} file {path}: {err}") from None
    return params

# How the tuning playbook sorts hyperparameters: architecture choices are what a study asks about (scientific);
# optimiser settings are tuned so the comparison is fair (nuisance); everything not searched is fixed.
NUISANCE = {"learning_rate", "optimizer", "momentum", "weight_decay", "batch_size", "lr_schedule", "lr_patience",
            "lr_factor", "label_smoothing", "epochs", "TRIAL_BUDGET", "seed", "patience"}


def study_parameters(profile: dict) -> dict:
    config = profile.get("config", {})
    space = config.get("searchSpace", {}) or {}
    searched = set(space)
    for spec in space.values():   # nested choices: their inner keys are searched too
        for option in spec.get("_value", []) if isinstance(spec, dict) else []:
            if isinstance(option, dict):
                searched |= {k for k in option if k != "_name"}
    return {"scientific": sorted(k for k in searched if k not in NUISANCE),
            "nuisance": sorted(k for k in searched if k in NUISANCE),
            "fixed": f"everything else: the defaults in trial/config.py and the trial command "
                     f"`{config.get('trialCommand', '?')}`",
            "tuner": (config.get("tuner") or config.get("advisor") or {}).get("name")
                     or (config.get("tuner") or {}).get("className")
                     # nni.nas has a strategy instead; experiments.nas.multitrial names the experiment after it
                     or (f"nni.nas strategy of {config.get('experimentName')}" if config.get("experimentType") == "nas"
                         else None),
            "assessor": (config.get("assessor") or {}).get("name")}


def make_report(experiment_id: str | None, out: Path, root=None, top_k: int = 1, seeds=(0, 1, 2),
                protocol: str = "train_val", epochs: int | None = None, baselines=("baselines/deep_cnn.json",),
                smoke: bool = False, data_dir=None, argv=None, jobs: int = 1, winner_files=(),
                winner_set: dict | None = None, front: int | None = None, within_points: float = 1.0) -> dict:
    """Write the report of `experiment_id` into `out` and return its summary (what summary.json holds).
    `winner_files` (params files, e.g. an architecture search's output of experiments/nas) are retrained as winners
    after the experiment's top-k; with no experiment they are the only winners, and the report has no search section.
    `winner_set` (config keys -> values) is set on every winner before retraining, not on the baselines: the way back
    from a low-fidelity key of the search's trials other than the epochs and the subset, which every group resets
    (a search at `--width_mult 0.5` retrains its winners at `{"width_mult": 1}`).
    The first winner sets the dataset, splits and epoch budget of every other group. Every input is checked before
    the first retraining (minutes each): the seeds, each file, `winner_set`, and every group's config under the
    protocol. Raises FileNotFoundError for an unknown experiment, ReportError for a missing winner or baseline file, a
    seed given twice, an experiment with no finished trial or no winner at all, trial.config.ConfigError for a file
    or a winner_set the harness refuses, trial.files.OutputError for an output that cannot be written."""
    try:
        seeds = check_seeds(seeds)
    except ValueError as err:
        raise ReportError(f"seeds: {err}") from None
    if top_k < 1:
        raise ReportError(f"top_k is {top_k}; retrain at least the best trial (1)")
    winner_set = dict(winner_set or {})
    try:
        normalize(winner_set)
    except ConfigError as err:
        raise ConfigError(f"--winner-set: {err}") from None
    file_winners = [(path, read_params(path, "winner")) for path in winner_files]
    baseline_params = [(path, read_params(path, "baseline")) for path in baselines]
    if experiment_id:
        experiment_dir(experiment_id, root)   # an unknown id is refused before the report's folder is made
    writable_dir(out)   # a read-only folder is refused before the retraining, not after it
    search = _search(experiment_id, root, top_k, out) if experiment_id else None
    # (group name, params, how it was chosen, whether it takes the first group's protocol: the files do)
    winners = [(f"winner{rank}_{w['trial_id']}", trial_params(w, winner_set),
                f"val {w['final_default']:.4f}", False) for rank, (_, w) in enumerate(search["winners"].iterrows(), 1)
               ] if search else []
    for path, params in file_winners:
        winners.append((f"winner{len(winners) + 1}_{Path(path).stem}", {**params, **winner_set}, str(path), True))
    if not winners:
        raise ReportError("nothing to report: give an experiment id, or winner files with --winner")
    # the search may have trained on a subset (a cheap fidelity); the winners and the baseline retrain on all of it
    extra = dict(SMOKE) if smoke else {"train_subset": 0}
    first = resolve(winners[0][1], protocol_overrides(protocol, epochs, 0), extra)
    # baselines and winner files take the first group's dataset, splits and budget: one protocol for all
    # (a dataset given by path: with the keys that shape its images; the winner's validation metric too)
    same = {**dataset_keys(first), "epochs": first.epochs, "val_size": first.val_size,
            "split_seed": first.split_seed, "metric": first.metric}
    dataset, budget = first.dataset, first.epochs
    # every group as it will train, before the first of them does: a refused one stops the report now, not after
    # the winners have retrained for minutes
    # a hand design written for a benchmark loses only a mirror the data is not said to allow (retrain.on_dataset)
    moved = {name: on_dataset(params, same) for rank, (name, params, _, follows) in enumerate(winners)
             if follows and rank}
    moved.update({f"baseline_{Path(path).stem}": on_dataset(params, same) for path, params in baseline_params})
    groups_params = [(name, moved[name][0] if name in moved else params) for name, params, _, _ in winners]
    groups_params += [(f"baseline_{Path(path).stem}", moved[f"baseline_{Path(path).stem}"][0])
                      for path, _ in baseline_params]
    changed = {name: notes for name, (_, notes) in moved.items() if notes}
    for name, params in groups_params:
        try:
            resolve(params, protocol_overrides(protocol, epochs, 0), extra)
        except ConfigError as err:
            raise ConfigError(f"{name}: {err}") from None
    names = [name for name, _ in groups_params]
    if len(set(names)) != len(names):
        raise ReportError(f"two groups would be named {', '.join(sorted({n for n in names if names.count(n) > 1}))} "
                          f"(files of the same name): rename one")
    # every group trains and is scored on the same splits: prepared once, shared by the runs of this process
    data = protocol_data(first, protocol, data_dir)

    groups: dict[str, list[dict]] = {}
    progress_total = (len(winners) + len(baselines)) * len(seeds)
    started = time.perf_counter()
    for (name, _, chosen, _), (_, params) in zip(winners, groups_params):
        print(f"[report] retraining {name} ({chosen}) over seeds {list(seeds)}: "
              f"{len(groups) * len(seeds)}/{progress_total} runs done", file=sys.stderr)
        groups[name] = retrain(params, seeds, out / "runs" / name, protocol, epochs, extra=extra, data_dir=data_dir,
                               jobs=jobs, data=data)
    # when the last winner seed got its test score: its test_metrics.json is written right then (a run reused from an
    # interrupted report keeps the time it was scored)
    winners_scored_ms = 1000 * max((Path(r["dir"]) / "test_metrics.json").stat().st_mtime
                                   for runs in groups.values() for r in runs)
    first_winner = next(iter(groups))
    for name, params in groups_params[len(winners):]:
        print(f"[report] retraining {name} over seeds {list(seeds)}: {len(groups) * len(seeds)}/{progress_total} "
              f"runs done, {time.perf_counter() - started:.0f}s", file=sys.stderr)
        groups[name] = retrain(params, seeds, out / "runs" / name, protocol, epochs, extra=extra, data_dir=data_dir,
                               jobs=jobs, data=data)

    # the Pareto section: fronts of the search's trials, `front` of their points retrained like the winners
    pareto = _pareto(search, out, groups, front, within_points, seeds, protocol, epochs, extra, data_dir, jobs, data,
                     winner_set) if search else None
    summary = {name: summarise(runs) for name, runs in groups.items()}
    info = data.info
    # imbalanced classes (or a search tuned on it): balanced accuracy leads, and the comparisons are of it
    lead = "balanced_accuracy" if info.imbalance > IMBALANCE_FLAG or first.metric == "balanced_accuracy" \
        else "accuracy"
    scores = "balanced_accuracies" if lead == "balanced_accuracy" else "test_accuracies"
    comparisons = {b: welch(summary[first_winner][scores], summary[b][scores])
                   for b in groups if b.startswith("baseline_")}
    write_file(out / "runs.csv", pd.DataFrame([
        {"group": g, "seed": r["seed"], "test_accuracy": r["test"]["accuracy"],
         "balanced_accuracy": balanced_accuracy(r["test"]), "macro_f1": r["test"]["macro_f1"],
         "roc_auc_ovr": r["test"]["roc_auc_ovr"], "params": r["final"]["params"],
         "train_seconds": r["final"]["train_seconds"], "dir": r["dir"]}
        for g, runs in groups.items() for r in runs]).to_csv(index=False))

    # figures
    best_run = max(groups[first_winner], key=lambda r: r["test"][lead] if lead in r["test"] else r["test"]["accuracy"])
    test_images, test_labels = data_mod.denormalise(data.test_x, info).numpy(), data.test_y.cpu().numpy()
    figures, importance = {}, {}
    if search:
        trials = search["trials"]
        figures = {
            "optimization_history.png": plots.optimization_history(trials, out / "optimization_history.png"),
            "learning_curves.png": plots.learning_curves(trials, out / "learning_curves.png"),
            "accuracy_vs_params.png": plots.accuracy_vs_params(trials, out / "accuracy_vs_params.png"),
            "parallel_coordinates.png": plots.parallel_coordinates(trials, out / "parallel_coordinates.png"),
        }
        figures["importance.png"], importance = plots.importance(trials, out / "importance.png")
    figures["confusion_matrix.png"] = plots.confusion(best_run["test"]["confusion_matrix"], info.classes,
                                                      out / "confusion_matrix.png", f"{first_winner}, seed "
                                                      f"{best_run['seed']}")
    figures["winner_vs_baseline.png"] = plots.comparison_bars(
        {g: summary[g][scores] for g in groups}, out / "winner_vs_baseline.png", "test " + lead.replace("_", " "))
    figures["misclassified.png"] = plots.misclassified(test_images, test_labels, best_run["proba"].argmax(1),
                                                       info.classes, out / "misclassified.png")
    export_model(best_run["model"], resolve(best_run["config"]), out / "model")

    result = {
        "experiment_id": experiment_id, "dataset": dataset, "winner_files": [str(p) for p in winner_files],
        "test_accuracy_per_seed": {name: dict(zip(map(str, seeds), g["test_accuracies"]))
                                   for name, g in summary.items()},
        "protocol": protocol, "seeds": list(seeds), "epochs": budget if epochs is None else epochs, "smoke": smoke,
        "val_size": first.val_size, "split_seed": first.split_seed,
        "winner_set": winner_set,
        # what the data is and which number leads: balanced accuracy where the classes are imbalanced
        "classes": list(info.classes), "class_imbalance": info.imbalance, "lead_metric": lead,
        "search_metric": first.metric, "image_shape": list(info.shape),
        "dataset_keys": {k: v for k, v in dataset_keys(first).items() if k != "dataset"},
        "baselines_changed": changed,
        "per_class": {"group": first_winner, "seed": best_run["seed"], "metrics": best_run["test"]["per_class"]},
        "groups": summary, "comparisons": comparisons, "importance": importance,
        "command": "python -m experiments.report " + " ".join(shlex.quote(a) for a in (argv or [experiment_id])),
    }
    if search:
        trials, counts = search["trials"], search["counts"]
        durations = trials["duration_s"].dropna()
        result.update({
            "experiment_dir": str(search["dir"]), "study": study_parameters(search["profile"]),
            "trial_counts": counts, "n_trials": int(len(trials)), "n_failed": int(counts.get("FAILED", 0)),
            "n_params_mismatch_in_nni_record": int(trials["nni_params_mismatch"].sum()),
            "best_val_accuracy": float(search["finished"]["final_default"].max()),
            "best_trial": str(search["winners"].iloc[0]["trial_id"]),
            "search_trial_hours": float(durations.sum() / 3600),
            "search_wall_hours": float((trials["end_ms"].max() - trials["start_ms"].min()) / 3.6e6)
            if trials["end_ms"].notna().any() else None,
            # from the first trial's start to the moment the last winner seed was scored: the cost a user waits for
            "minutes_search_start_to_last_winner_scored": float((winners_scored_ms - trials["start_ms"].min())
                                                                / 60000),
            "edge_of_space": edge_report(search["winners"].iloc[0], search["profile"]),
        })
    if pareto:
        result["pareto"] = pareto
    write_file(out / "summary.json", json_text(result, default=str))
    write_file(out / "report.md", render(result, groups, figures))
    return result


def _search(experiment_id: str, root, top_k: int, out: Path) -> dict:
    """The experiment's trial table (also written to out/trials.csv), its finished trials and the top-k of them."""
    exp_dir = experiment_dir(experiment_id, root)
    profile, trials = load_experiment(exp_dir)
    write_file(out / "trials.csv", trials.to_csv(index=False))
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    finished = ranked_finished(trials)
    if finished.empty:
        running = [k for k in counts if k not in (*END_STATES, STOPPED_WITH_EXPERIMENT)]
        then = ("wait for one, then run this again" if running or not (len(trials) or profile.get("end_ms")) else
                f"why each trial ended: python -m experiments.check --experiment {experiment_id}")
        raise ReportError(f"experiment {experiment_id}: nothing finished, no trial has a final result "
                          f"({', '.join(f'{v} {k}' for k, v in counts.items()) or 'no trials'}); {then}")
    return {"dir": exp_dir, "profile": profile, "trials": trials, "counts": counts, "finished": finished,
            "winners": finished.head(top_k)}


def trial_params(row: pd.Series, winner_set: dict) -> dict:
    """The config a search's trial trained with (its own config.json, not NNI's record: NNI 3.0 can mis-pair them),
    with the report's --winner-set keys over it: what a winner or a Pareto point is retrained from."""
    return {**read_json(Path(row["trial_dir"]) / "config.json"), **winner_set}


def _pareto(search: dict, out: Path, groups: dict, front_n: int | None, within_points: float, seeds, protocol: str,
            epochs, extra: dict, data_dir, jobs: int, data, winner_set: dict) -> dict:
    """The search's Pareto fronts (experiments/results/pareto.py): a figure per front (accuracy against latency and
    against size), the smallest / fastest model within `within_points` of the best, and `front_n` points of the
    latency front (the size front where trials report no latency), spread along it, retrained over the seeds under
    the report's protocol with a 95% confidence interval each and its difference to the most accurate of them. A
    point that is one of the report's winners reuses its runs. front_n None: 3 after a search by the multi-objective
    ParetoTuner, 0 after any other (the fronts are shown either way)."""
    trials = search["trials"]
    tuner = str(((search["profile"].get("config") or {}).get("tuner") or {}).get("className") or "")
    front_n = (3 if "ParetoTuner" in tuner else 0) if front_n is None else front_n
    result = pareto_mod.summarise(trials, within_points)
    done, _ = pareto_mod.candidates(trials)
    kind = "latency" if "latency" in result["fronts"] else "size"
    column = result["fronts"].get(kind, {}).get("column")
    picks = pareto_mod.spread(pareto_mod.front(done, column), front_n) if column else done.iloc[0:0]
    for name, f in result["fronts"].items():
        f["figure"] = f"pareto_{name}.png"
        plots.pareto_front(done, pareto_mod.front(done, f["column"]), f["column"],
                           " ".join(pareto_mod.LABELS.get(f["column"], (f["column"], ""))[:2]), out / f["figure"],
                           chosen=list(picks["trial_id"].astype(str)) if name == kind else [])
    winners = {name.split("_", 1)[1]: name for name in groups if name.startswith("winner")}
    retrained = []
    for _, row in picks.iterrows():
        trial_id = str(row["trial_id"])
        name = winners.get(trial_id, f"front_{trial_id}")
        if name not in groups:
            print(f"[report] retraining Pareto point {trial_id} ({column.removeprefix('final_')} "
                  f"{row[column]:.4g}, val {row['final_default']:.4f}) over seeds {list(seeds)}", file=sys.stderr)
            params = trial_params(row, winner_set)
            groups_runs = retrain(params, seeds, out / "runs" / name, protocol, epochs, extra=extra,
                                  data_dir=data_dir, jobs=jobs, data=data)
        else:
            groups_runs = groups[name]
        s = summarise(groups_runs)
        mean, low, high = pareto_mod.mean_ci(s["test_accuracies"])
        retrained.append({"trial_id": trial_id, "group": name, "val_accuracy": float(row["final_default"]),
                          column: float(row[column]), "params": s["params"], "test_accuracies": s["test_accuracies"],
                          "test_accuracy_mean": mean, "test_accuracy_ci95": [low, high],
                          "diverged_seeds": s["diverged_seeds"]})
    for point in retrained[1:]:   # the most accurate on validation comes first
        point["minus_most_accurate"] = welch(point["test_accuracies"], retrained[0]["test_accuracies"])
    return {**result, "front_points": front_n, "retrained_front": kind if retrained else None,
            "retrained_column": column, "retrained": retrained, "seeds": list(seeds)}


def _pareto_lines(p: dict | None) -> list[str]:
    """The report's Pareto section: per front a table and its figure, the one-line answers, the retrained points."""
    if not p:
        return []
    lines = ["## Accuracy against latency and size: the Pareto fronts", "",
             f"{p['n_candidates']} finished trials are points here"
             + (f"; {p['n_refused']} refused by a constraint before training are left out (no model to ship)"
                if p["n_refused"] else "")
             + (f"; {p['n_diverged']} that diverged (loss non-finite) are left out" if p.get("n_diverged") else "")
             + ". A trial is on a front when no other is at least as accurate and as "
             "fast (or small) and better in one; trials with equal figures are all kept.", ""]
    if not p["fronts"]:
        return lines + ["No finished trial reports its size or latency: no front.", ""]
    for kind, f in p["fronts"].items():
        column = f["column"]
        name, unit = pareto_mod.LABELS.get(column, (column, ""))[:2]
        lines += [f"### Validation accuracy against {name} (`{column.removeprefix('final_')}`: {unit})", "",
                  f"| trial | validation accuracy | {name} |", "| --- | --- | --- |"]
        lines += [f"| {t['trial_id']} | {t['val_accuracy']:.4f} | {pareto_mod.fmt(t[column])} |" for t in f["trials"]]
        lines += ["", pareto_mod.within_line(f["within"]), "", f"![{f['figure']}]({f['figure']})", ""]
    if p["retrained"]:
        column = p["retrained_column"]
        name, unit = pareto_mod.LABELS.get(column, (column, ""))[:2]
        lines += [f"### {len(p['retrained'])} points of the {p['retrained_front']} front retrained (seeds "
                  f"{p['seeds']}, the winners' protocol)", "",
                  f"| trial | validation accuracy | {name} ({unit}) | parameters | test accuracy (mean) | 95% CI | "
                  f"runs | minus the most accurate point (95% CI) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for t in p["retrained"]:
            low, high = t["test_accuracy_ci95"]
            c = t.get("minus_most_accurate")
            flag = f" (DIVERGED: seeds {t['diverged_seeds']})" if t["diverged_seeds"] else ""
            lines.append(f"| {t['trial_id']} | {t['val_accuracy']:.4f} | {pareto_mod.fmt(t[column])} | {t['params']:,} | "
                         f"{t['test_accuracy_mean']:.4f}{flag} | {low:.4f} to {high:.4f} | "
                         f"{', '.join(f'{a:.4f}' for a in t['test_accuracies'])} | "
                         f"{difference_text(c) if c else 'the reference'} |")
        lines.append("")
    return lines


def edge_report(winner: pd.Series, profile: dict) -> list[str]:
    """Numeric search-space ranges whose best value sits in the outer 5%: the space may be too narrow there."""
    notes = []
    for key, spec in (profile.get("config", {}).get("searchSpace") or {}).items():
        if not isinstance(spec, dict) or spec.get("_type") not in ("uniform", "loguniform", "quniform", "qloguniform"):
            continue
        value = winner.get(f"param_{key}")
        low, high = spec["_value"][0], spec["_value"][1]
        if value is None or pd.isna(value):
            continue
        scale = np.log if "log" in spec["_type"] else (lambda v: v)
        pos = (scale(value) - scale(low)) / (scale(high) - scale(low))
        if pos < 0.05 or pos > 0.95:
            notes.append(f"{key} = {value:.4g} is at the {'low' if pos < 0.05 else 'high'} edge of [{low}, {high}]")
    return notes


def _study_lines(r: dict) -> list[str]:
    s = r["study"]
    return ["## The study", "",
            f"- Tuner: {s['tuner']}; assessor: {s['assessor']}.",
            f"- Scientific hyperparameters (what the study asks about): {', '.join(s['scientific']) or 'none'}.",
            f"- Nuisance hyperparameters (tuned so the comparison is fair): {', '.join(s['nuisance']) or 'none'}.",
            f"- Fixed: {s['fixed']}.",
            f"- Trials: {r['n_trials']} ({', '.join(f'{v} {k}' for k, v in r['trial_counts'].items())}); "
            f"{r['n_failed']} failed. NNI's own parameter record disagreed with the trial's for "
            f"{r['n_params_mismatch_in_nni_record']} trials (NNI 3.0 mis-pairing); this report uses the trials' own.",
            f"- Search cost: {r['search_trial_hours']:.2f} trial-hours"
            + (f" in {r['search_wall_hours']:.2f} h of wall time." if r["search_wall_hours"] else "."),
            f"- Best validation {r.get('search_metric', 'accuracy').replace('_', ' ')} during the search (the "
            f"tuner's metric, config key `metric`): {r['best_val_accuracy']:.4f} (trial {r['best_trial']}).",
            f"- From the search's first trial to the last winner seed scored: "
            f"{r['minutes_search_start_to_last_winner_scored']:.1f} minutes (when its test_metrics.json was "
            f"written; a run reused from an interrupted report keeps that time).",
            f"- Best point on the edge of the space: {'; '.join(r['edge_of_space']) or 'no'}.", ""]


def _data_lines(r: dict) -> list[str]:
    """What the data is: for a dataset given by path its classes, image shape and the keys that made it; for every
    dataset the tuner's metric."""
    metric = r.get("search_metric", "accuracy")
    lines = ["## The data", ""]
    if r.get("dataset_keys"):
        shape, keys, classes = r.get("image_shape") or [0, 0, 0], r["dataset_keys"], r["classes"]
        more = f" and {len(classes) - 20} more" if len(classes) > 20 else ""
        lines += [f"- {r['dataset']}: {len(classes)} classes ({', '.join(classes[:20])}{more}), "
                  f"images {shape[1]}x{shape[2]} with {shape[0]} channel{'s' if shape[0] > 1 else ''}, "
                  f"resize_mode {keys.get('resize_mode')!r}, mirror_safe {str(keys.get('mirror_safe')).lower()}.",
                  f"- Class imbalance (largest / smallest training class): {r.get('class_imbalance', 1.0):.2f}"
                  + (f" > {IMBALANCE_FLAG}: imbalanced." if r.get("class_imbalance", 1.0) > IMBALANCE_FLAG else ".")]
    lines += [f"- The tuner's metric: validation {metric.replace('_', ' ')} (config key `metric: {metric}`); the "
              f"table below leads with test {r.get('lead_metric', 'accuracy').replace('_', ' ')}.", ""]
    return lines


def _per_class_lines(r: dict) -> list[str]:
    """The best winner run's per-class test metrics, by class name."""
    per_class = r.get("per_class")
    if not per_class:
        return []
    lines = [f"## Per-class test metrics ({per_class['group']}, seed {per_class['seed']})", "",
             "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
              for name, m in per_class["metrics"].items()]
    return lines + [""]


def render(r: dict, groups: dict, figures: dict) -> str:
    title = f"experiment {r['experiment_id']}" if r["experiment_id"] else ", ".join(r["winner_files"])
    lines = [f"# Search report: {title} ({r['dataset']})", "",
             f"Reproduce everything here: `{r['command']}`" + (" (SMOKE: tiny subset, one epoch; not a result)"
                                                               if r["smoke"] else ""), ""]
    if r["winner_files"]:
        lines += [f"Winners given as files (an architecture search's output, or any params file): "
                  f"{', '.join(f'`{p}`' for p in r['winner_files'])}; they retrain under the protocol of the first "
                  f"winner.", ""]
    if r.get("winner_set"):
        lines += [f"The winners retrain with {', '.join(f'{k} = {v}' for k, v in r['winner_set'].items())} set over "
                  f"what they were chosen with (`--winner-set`: the search's trials ran at a lower fidelity); the "
                  f"baselines keep their own.", ""]
    lines += _data_lines(r)
    if r["experiment_id"]:
        lines += _study_lines(r)
    balanced = r.get("lead_metric") == "balanced_accuracy"
    lines += [f"## Winner vs baseline on the test split ({r['protocol']}, {r['epochs']} epochs, seeds {r['seeds']})",
              ""]
    if balanced:
        why = (f"The classes are imbalanced (largest / smallest training class {r['class_imbalance']:.2f} > "
               f"{IMBALANCE_FLAG})" if r.get("class_imbalance", 1.0) > IMBALANCE_FLAG else
               "The search tuned validation balanced accuracy (`metric: balanced_accuracy`)")
        lines += [f"{why}: balanced accuracy (the mean recall over the classes) and macro F1 lead, and the "
                  f"comparisons below are of balanced accuracy; plain accuracy rewards predicting the largest "
                  f"classes.", "",
                  "| model | balanced accuracy (mean +- std) | runs | macro F1 (mean +- std) | accuracy (mean +- std) "
                  "| ROC AUC (ovr) | parameters | train s/run |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, g in r["groups"].items():
            flag = f" (DIVERGED: seeds {', '.join(map(str, d))})" if (d := g.get("diverged_seeds")) else ""
            lines.append(f"| {name} | {g['balanced_accuracy_mean']:.4f} +- {g['balanced_accuracy_std']:.4f}{flag} | "
                         f"{', '.join(f'{a:.4f}' for a in g['balanced_accuracies'])} | "
                         f"{g['macro_f1_mean']:.4f} +- {g.get('macro_f1_std', 0.0):.4f} | "
                         f"{g['test_accuracy_mean']:.4f} +- {g['test_accuracy_std']:.4f} | {g['roc_auc_mean']:.4f} | "
                         f"{g['params']:,} | {g['train_seconds_mean']:.0f} |")
    else:
        lines += ["| model | test accuracy (mean +- std) | runs | macro F1 | ROC AUC (ovr) | parameters | train s/run |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, g in r["groups"].items():
            lines.append(f"| {name} | {accuracy_cells(g)} | {g['macro_f1_mean']:.4f} | {g['roc_auc_mean']:.4f} | "
                         f"{g['params']:,} | {g['train_seconds_mean']:.0f} |")
    lines.append("")
    for name, notes in (r.get("baselines_changed") or {}).items():
        lines.append(f"- {name} moved onto this dataset with {', '.join(notes)}: the data is not said to be "
                     f"mirror-safe (`mirror_safe`), and a mirror could change a class.")
    for name, g in r["groups"].items():
        if g.get("diverged_seeds"):
            lines.append(f"- **{name} diverged** in seeds {g['diverged_seeds']} ({g['diverged_error']}): the test "
                         "accuracy of those runs is that of a broken network, not a result of this model.")
        if g.get("chance_seeds"):
            lines.append(f"- **{name} learnt nothing** in seeds {g['chance_seeds']}: test accuracy at chance (no "
                         f"better than answering the most frequent class); those runs are not a result of this model.")
        if g.get("float32_fallback_seeds"):
            lines.append(f"- {name}: seeds {g['float32_fallback_seeds']} were at chance after their first bfloat16 "
                         f"epoch and trained again in float32 (trial/precision.py); their train s/run counts both.")
    for name, c in r["comparisons"].items():
        broken = [g for g in (next(iter(r["groups"])), name)
                  if r["groups"][g].get("diverged_seeds") or r["groups"][g].get("chance_seeds")]
        caveat = (f"; not a comparison of trained models: {' and '.join(broken)} diverged or learnt nothing in some "
                  f"seeds" if broken else "")
        lines.append(f"- Winner minus {name}{' in balanced accuracy' if balanced else ''}: {difference_text(c)}"
                     f"{caveat}.")
    lines += ["", "Per-run outputs (config, metrics per epoch, checkpoint, test metrics with per-class precision, "
              "recall and F1 and the confusion matrix) are under `runs/`; `runs.csv` lists every run.", ""]
    lines += _per_class_lines(r)
    lines += _pareto_lines(r.get("pareto"))
    lines += ["## Figures", ""]
    lines += [f"![{name}]({name})" for name in figures]
    lines += ["", "## The winner as a model", "",
              "`model/` holds `model.pt2` (a `torch.export` program: raw pixel values in, probabilities out), "
              "`model.onnx` (the same graph for onnxruntime; `model.json` gives the largest difference of their "
              "probabilities on random images), "
              "`model_state.pt` (state dict and resolved config) and `model.json`. Classify images with torch and "
              "Pillow only: `python experiments/results/predict.py model/ image.png`"
              + (f" (any image file, of any size: read and resized to {r['image_shape'][1]}x{r['image_shape'][2]} "
                 f"as the training images were, model.json says how)" if r.get("dataset_keys") else "") + ".", ""]
    winner_cfg = groups[next(iter(groups))][0]["config"]
    lines += ["Winner's resolved config:", "", "```json", json.dumps(winner_cfg, indent=2), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment_id", nargs="?", help="the NNI experiment (optional with --winner)")
    p.add_argument("--winner", nargs="+", default=[], metavar="FILE",
                   help="params files retrained as winners too (an architecture file of experiments.nas)")
    p.add_argument("--root", help="the experiment's experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--out", help="report directory (default reports/<experiment id>)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--protocol", choices=PROTOCOLS, default="train_val")
    p.add_argument("--epochs", type=int, help="retraining epochs (default: the search's budget)")
    p.add_argument("--baseline", nargs="+", default=["baselines/deep_cnn.json"])
    p.add_argument("--data-dir")
    p.add_argument("--jobs", type=int, default=1, help="seeds retrained at once, in separate processes (CPU: the core "
                   "count; each gets cpu_count // jobs threads)")
    p.add_argument("--winner-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config keys set on the winners (not the baselines) before retraining, e.g. width_mult=1 "
                        "after a search whose trials ran at --width_mult 0.5")
    p.add_argument("--front", type=int, metavar="N", help="points of the search's Pareto front (accuracy against "
                   "latency, else size) retrained over the seeds, spread along it (default: 3 after a search by the "
                   "multi-objective ParetoTuner, 0 otherwise; the fronts are always shown)")
    p.add_argument("--within", type=float, default=1.0, metavar="POINTS", help="the report names the smallest and the "
                   "fastest model within POINTS percentage points of the best validation accuracy (default 1.0)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    try:
        check_seeds(args.seeds)
    except ValueError as err:
        p.error(f"--seeds: {err}")
    if args.top_k < 1 or args.jobs < 1:
        p.error("--top-k and --jobs take 1 or more")
    if (args.front is not None and args.front < 0) or args.within < 0:
        p.error("--front and --within take 0 or more")
    if not all("=" in kv for kv in args.winner_set):
        p.error(f"--winner-set takes KEY=VALUE pairs, got {' '.join(args.winner_set)}")
    winner_set = dict(kv.split("=", 1) for kv in args.winner_set)
    if len(winner_set) != len(args.winner_set):
        p.error(f"--winner-set sets a key twice: {' '.join(args.winner_set)}; keep one")
    if not args.experiment_id and not args.winner:
        p.error("give an experiment id, or winner files with --winner")
    out = Path(args.out or f"reports/{args.experiment_id or Path(args.winner[0]).stem}")
    try:
        result = make_report(args.experiment_id, out, args.root, args.top_k, args.seeds, args.protocol, args.epochs,
                             args.baseline, args.smoke, args.data_dir, argv, args.jobs, args.winner, winner_set,
                             args.front, args.within)
    except (ReportError, FileNotFoundError, ConfigError, DatasetError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:   # Ctrl-C or SIGTERM: the seeds that finished are kept, and reused
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"[report] stopped by {signal.Signals(signum).name}; every seed that finished is kept under "
              f"{out / 'runs'}, and the same command goes on from there", file=sys.stderr)
        return 128 + signum
    for name, g in result["groups"].items():
        diverged = (f"  DIVERGED in seeds {g['diverged_seeds']} ({g['diverged_error']}): not a result"
                    if g["diverged_seeds"] else "")
        if g.get("chance_seeds"):
            diverged += f"  LEARNT NOTHING in seeds {g['chance_seeds']} (test accuracy at chance): not a result"
        lead = (f"test balanced accuracy {g['balanced_accuracy_mean']:.4f} +- {g['balanced_accuracy_std']:.4f}, "
                f"macro F1 {g['macro_f1_mean']:.4f}, " if result["lead_metric"] == "balanced_accuracy" else "")
        print(f"{name}: {lead}test accuracy {g['test_accuracy_mean']:.4f} +- {g['test_accuracy_std']:.4f}{diverged}")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
