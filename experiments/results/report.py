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
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trial import data as data_mod
from trial.config import SMOKE, ConfigError, load_params_file, resolve

from . import plots
from .compare import accuracy_cells, difference_text, welch
from .evaluate import export_model
from .export import experiment_dir, load_experiment, ranked_finished
from .retrain import PROTOCOLS, protocol_data, protocol_overrides, retrain, summarise


class ReportError(RuntimeError):
    """An experiment that cannot be reported on yet (no finished trial); the message says what to wait for."""

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
                winner_set: dict | None = None) -> dict:
    """Write the report of `experiment_id` into `out` and return its summary (what summary.json holds).
    `winner_files` (params files, e.g. an architecture search's output of experiments/nas) are retrained as winners
    after the experiment's top-k; with no experiment they are the only winners, and the report has no search section.
    `winner_set` (config keys -> values) is set on every winner before retraining, not on the baselines: the way back
    from a low-fidelity key of the search's trials other than the epochs and the subset, which every group resets
    (a search at `--width_mult 0.5` retrains its winners at `{"width_mult": 1}`).
    The first winner sets the dataset, splits and epoch budget of every other group. Raises FileNotFoundError for an
    unknown experiment or winner file, ReportError when the experiment has no finished trial yet or there is no
    winner at all, trial.config.ConfigError for a winner file the harness refuses."""
    out.mkdir(parents=True, exist_ok=True)
    search = _search(experiment_id, root, top_k, out) if experiment_id else None
    # (group name, params, how it was chosen, whether it takes the first group's protocol: the files do)
    winner_set = dict(winner_set or {})
    winners = [(f"winner{rank}_{w['trial_id']}",
                {**json.loads((Path(w["trial_dir"]) / "config.json").read_text()), **winner_set},
                f"val {w['final_default']:.4f}", False) for rank, (_, w) in enumerate(search["winners"].iterrows(), 1)
               ] if search else []
    for path in winner_files:
        winners.append((f"winner{len(winners) + 1}_{Path(path).stem}", {**load_params_file(path), **winner_set},
                        str(path), True))
    if not winners:
        raise ReportError("nothing to report: give an experiment id, or winner files with --winner")
    # the search may have trained on a subset (a cheap fidelity); the winners and the baseline retrain on all of it
    extra = dict(SMOKE) if smoke else {"train_subset": 0}
    first = resolve(winners[0][1], protocol_overrides(protocol, epochs, 0), extra)
    # every group trains and is scored on the same splits: prepared once, shared by the runs of this process
    data = protocol_data(first, protocol, data_dir)
    # baselines and winner files take the first group's dataset, splits and budget: one protocol for all
    same = {"dataset": first.dataset, "epochs": first.epochs, "val_size": first.val_size,
            "split_seed": first.split_seed}
    dataset, budget = first.dataset, first.epochs

    groups: dict[str, list[dict]] = {}
    progress_total = (len(winners) + len(baselines)) * len(seeds)
    started = time.perf_counter()
    for rank, (name, params, chosen, follows) in enumerate(winners):
        print(f"[report] retraining {name} ({chosen}) over seeds {list(seeds)}: "
              f"{len(groups) * len(seeds)}/{progress_total} runs done", file=sys.stderr)
        groups[name] = retrain({**params, **same} if follows and rank else params, seeds, out / "runs" / name,
                               protocol, epochs, extra=extra, data_dir=data_dir, jobs=jobs, data=data)
    # when the last winner seed got its test score: its test_metrics.json is written right then (a run reused from an
    # interrupted report keeps the time it was scored)
    winners_scored_ms = 1000 * max((Path(r["dir"]) / "test_metrics.json").stat().st_mtime
                                   for runs in groups.values() for r in runs)
    first_winner = next(iter(groups))
    for path in baselines:
        name = f"baseline_{Path(path).stem}"
        print(f"[report] retraining {name} over seeds {list(seeds)}: {len(groups) * len(seeds)}/{progress_total} "
              f"runs done, {time.perf_counter() - started:.0f}s", file=sys.stderr)
        groups[name] = retrain({**load_params_file(path), **same}, seeds, out / "runs" / name, protocol, epochs,
                               extra=extra, data_dir=data_dir, jobs=jobs, data=data)

    summary = {name: summarise(runs) for name, runs in groups.items()}
    comparisons = {b: welch(summary[first_winner]["test_accuracies"], summary[b]["test_accuracies"])
                   for b in groups if b.startswith("baseline_")}
    pd.DataFrame([{"group": g, "seed": r["seed"], "test_accuracy": r["test"]["accuracy"],
                   "macro_f1": r["test"]["macro_f1"], "roc_auc_ovr": r["test"]["roc_auc_ovr"],
                   "params": r["final"]["params"], "train_seconds": r["final"]["train_seconds"], "dir": r["dir"]}
                  for g, runs in groups.items() for r in runs]).to_csv(out / "runs.csv", index=False)

    # figures
    info = data_mod.INFO[dataset]
    best_run = max(groups[first_winner], key=lambda r: r["test"]["accuracy"])
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
        {g: summary[g]["test_accuracies"] for g in groups}, out / "winner_vs_baseline.png")
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
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render(result, groups, figures))
    return result


def _search(experiment_id: str, root, top_k: int, out: Path) -> dict:
    """The experiment's trial table (also written to out/trials.csv), its finished trials and the top-k of them."""
    exp_dir = experiment_dir(experiment_id, root)
    profile, trials = load_experiment(exp_dir)
    trials.to_csv(out / "trials.csv", index=False)
    counts = trials["status"].value_counts().to_dict()
    finished = ranked_finished(trials)
    if finished.empty:
        raise ReportError(f"experiment {experiment_id} has no SUCCEEDED trial with a final result yet "
                          f"({len(trials)} trials: {counts}); wait for one, then run this again")
    return {"dir": exp_dir, "profile": profile, "trials": trials, "counts": counts, "finished": finished,
            "winners": finished.head(top_k)}


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
            f"- Best validation accuracy during the search: {r['best_val_accuracy']:.4f} (trial {r['best_trial']}).",
            f"- From the search's first trial to the last winner seed scored: "
            f"{r['minutes_search_start_to_last_winner_scored']:.1f} minutes (when its test_metrics.json was "
            f"written; a run reused from an interrupted report keeps that time).",
            f"- Best point on the edge of the space: {'; '.join(r['edge_of_space']) or 'no'}.", ""]


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
    if r["experiment_id"]:
        lines += _study_lines(r)
    lines += [f"## Winner vs baseline on the test split ({r['protocol']}, {r['epochs']} epochs, seeds {r['seeds']})",
              "",
              "| model | test accuracy (mean +- std) | runs | macro F1 | ROC AUC (ovr) | parameters | train s/run |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, g in r["groups"].items():
        lines.append(f"| {name} | {accuracy_cells(g)} | {g['macro_f1_mean']:.4f} | {g['roc_auc_mean']:.4f} | "
                     f"{g['params']:,} | {g['train_seconds_mean']:.0f} |")
    lines.append("")
    for name, g in r["groups"].items():
        if g.get("diverged_seeds"):
            lines.append(f"- **{name} diverged** in seeds {g['diverged_seeds']} ({g['diverged_error']}): the test "
                         "accuracy of those runs is that of a broken network, not a result of this model.")
    for name, c in r["comparisons"].items():
        broken = [g for g in (next(iter(r["groups"])), name) if r["groups"][g].get("diverged_seeds")]
        caveat = f"; not a comparison of trained models: {' and '.join(broken)} diverged" if broken else ""
        lines.append(f"- Winner minus {name}: {difference_text(c)}{caveat}.")
    lines += ["", "Per-run outputs (config, metrics per epoch, checkpoint, test metrics with per-class precision, "
              "recall and F1 and the confusion matrix) are under `runs/`; `runs.csv` lists every run.", "",
              "## Figures", ""]
    lines += [f"![{name}]({name})" for name in figures]
    lines += ["", "## The winner as a model", "",
              "`model/` holds `model.pt2` (a `torch.export` program: raw pixel values in, probabilities out), "
              "`model_state.pt` (state dict and resolved config) and `model.json`. Classify images with torch and "
              "Pillow only: `python experiments/results/predict.py model/ image.png`.", ""]
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
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
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
                             args.baseline, args.smoke, args.data_dir, argv, args.jobs, args.winner, winner_set)
    except (ReportError, FileNotFoundError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, g in result["groups"].items():
        diverged = (f"  DIVERGED in seeds {g['diverged_seeds']} ({g['diverged_error']}): not a result"
                    if g["diverged_seeds"] else "")
        print(f"{name}: test accuracy {g['test_accuracy_mean']:.4f} +- {g['test_accuracy_std']:.4f}{diverged}")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
