"""Does a multi-objective search find better accuracy-latency trade-offs than TPE on accuracy alone, for the same
budget? Searches compared by the hypervolume of their fronts, against one stated reference point, and by the best
model each found under a stated latency budget; over several search seeds, with paired differences.

    # run the study: per seed, NSGA-II (accuracy, latency) then TPE (accuracy), each a real local NNI experiment of
    # --trials trials on the same space and trial command; trials.csv and summary.json are written after every search
    python -m experiments.studies.pareto_vs_tpe run --seeds 0 1 2 --trials 48 --epochs 1 \
        --flags "--train_subset 5000" --out runs/pareto_vs_tpe
    python -m experiments.studies.pareto_vs_tpe run --smoke --out /tmp/pvt          # tiny data, 1 seed: for CI
    # summarise a finished run again (another budget, reference point or objective), running nothing
    python -m experiments.studies.pareto_vs_tpe summary runs/pareto_vs_tpe [--budget-ms 1.0] [--objective final_params] \
        [--equal-time] [--out runs/pareto_vs_tpe/other/summary.json]
    # two searches run some other way: experiment ids or exported trial tables
    python -m experiments.studies.pareto_vs_tpe compare PARETO_ID TPE_ID [--root DIR] [--budget-ms 2.0] \
        [--reference 0.80 10.0] [--out runs/pareto_vs_tpe.json] [--names nsga2 tpe]

Each source is an experiment id (read from NNI's database under --root, the trials' own records) or a CSV of
experiments.results.export. Points are the finished trials that a constraint did not refuse (experiments/results/
pareto.py); the front is validation accuracy (maximised) against `--objective` (default final_latency_ms,
minimised; final_params or final_model_bytes for size). The hypervolume is the area the front dominates up to the
reference point (accuracy, latency): the same point for every search, by default the worst accuracy and the worst
latency of all points of all searches, stated in the output. A larger hypervolume is a front closer to the ideal
corner. "Best under the budget" is the most accurate trial whose latency is at most --budget-ms (default: the median
latency of all points, stated). With several seeds, `summary` gives per search the mean of both with Student's t 95%
interval over seeds, and per seed the difference of each search from the last one named (TPE), with its interval.
`--equal-time` compares at equal wall-clock instead: per seed, each search keeps the trials that ended within the
minutes of that seed's quickest search. `fronts.png` beside the summary draws every search's front per seed, the budget marked.

Equal budget means the same number of trials, the same trial command (epochs, subset, one torch thread each) and the
same concurrency on the same machine, searches one after the other so each sees only its own trials on the cores; the
minutes each took are recorded too (a search that prefers fast models finishes sooner). No assessor on either side,
so only the tuner differs. Configs shipped for users: nni_configs/fmnist_pareto.yml and nni_configs/fmnist.yml
(docs/pareto.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from trial import REPO
from trial.files import OutputError, json_text, write_file, write_files

from ..launch.local import ExperimentError
from ..results import pareto
from ..tuners import TUNERS_DIR, fixed_tpe

DIRECTIONS = ("maximize", "minimize")
# the searches `run` can start, as nni.experiment tuner specs; each gets the run's seed. NSGA-II and MOTPE are Optuna's
# samplers inside experiments/tuners/pareto.py (accuracy against batch-1 CPU latency); TPE is NNI's, on accuracy alone
SEARCHES = {
    "nsga2": {"code_directory": str(TUNERS_DIR), "class_name": "pareto.ParetoTuner",
              "class_args": {"algorithm": "nsga2", "objectives": {"default": "maximize", "latency_ms": "minimize"}}},
    "motpe": {"code_directory": str(TUNERS_DIR), "class_name": "pareto.ParetoTuner",
              "class_args": {"algorithm": "motpe", "objectives": {"default": "maximize", "latency_ms": "minimize"}}},
    "tpe": fixed_tpe(),
}
SMOKE_FLAGS = "--train_subset 256 --val_size 128 --batch_size 64 --eval_test false"


def points(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """The candidate trials (finished, not refused) with a number in `column`."""
    done, _ = pareto.candidates(trials)
    if column not in done:
        return done.iloc[0:0]
    return done[pd.to_numeric(done[column], errors="coerce").notna()]


def compare(tables: dict[str, pd.DataFrame], column: str = "final_latency_ms", budget: float | None = None,
            reference: tuple[float, float] | None = None) -> dict:
    """Per search (name -> trial table): its trials, its front, the front's hypervolume against one reference point,
    and its most accurate trial with `column` at most `budget`. ValueError when a search has no point."""
    found = {name: points(t, column) for name, t in tables.items()}
    empty = [name for name, p in found.items() if p.empty]
    if empty:
        raise ValueError(f"{', '.join(empty)}: no finished trial reports {column.removeprefix('final_')} (trials "
                         f"report it in their final metric dict); nothing to compare")
    every = pd.concat(found.values())
    values = pd.to_numeric(every[column])
    if reference is None:   # the nadir of all points: every point counts, and it is the same for both
        reference = (float(every[pareto.ACCURACY].min()), float(values.max()))
    if budget is None:
        budget = float(values.median())
    out = {"objective": column, "reference": {"val_accuracy": reference[0], column: reference[1]},
           "budget": {column: budget}, "searches": {}}
    for name, p in found.items():
        front = pareto.front(p, column)
        xy = np.column_stack([p[pareto.ACCURACY].astype(float), pd.to_numeric(p[column])])
        under = p[pd.to_numeric(p[column]) <= budget]
        best = under.sort_values([pareto.ACCURACY, column], ascending=[False, True]).iloc[0] if len(under) else None
        out["searches"][name] = {
            "n_points": int(len(p)), "n_refused": pareto.candidates(tables[name])[1],
            "n_diverged": pareto.diverged(tables[name]),
            "hypervolume": pareto.hypervolume_2d(xy, DIRECTIONS, reference),
            "front": [pareto.chosen_fields(r, column) for _, r in front.iterrows()],
            "best_val_accuracy": float(p[pareto.ACCURACY].max()),
            "best_under_budget": pareto.chosen_fields(best, column) if best is not None else None}
    return out


def run_study(out: Path, workdir: Path, seeds: list[int], trials: int, epochs: int = 1, flags: str = "",
              searches: tuple[str, ...] = ("nsga2", "tpe"), concurrency: int = 2, population: int = 8,
              dataset: str = "fmnist", column: str = "final_latency_ms", resume: bool = False) -> dict:
    """Per seed, each of `searches` as a real local NNI experiment of `trials` trials (NNI's working directory under
    `workdir`), one after the other; every trial is appended to out/trials.csv (columns search, seed, experiment_id,
    minutes, then experiments.results.export's) and out/summary.json rewritten after each search, so a study stopped
    part-way keeps what it finished. `resume`: go on from out/trials.csv, running only the searches and seeds it lacks
    (more seeds, or the rest of a stopped study), with the trial command it was run with. Returns the summary.
    FileExistsError when out/trials.csv exists and not `resume` (nothing is overwritten); ValueError when resuming
    with another trial command, number of trials, concurrency or population; ExperimentError when an experiment does
    not start twice."""
    from ..launch import local
    space = json.loads((REPO / "search_spaces" / f"{dataset}.json").read_text())
    command = f"python -m trial --dataset {dataset} --epochs {epochs} --threads 1 {flags}".strip()
    rows, done = [], set()
    if (out / "trials.csv").is_file():
        if not resume:
            raise FileExistsError(f"{out / 'trials.csv'} holds a study already: add --resume to run only the searches "
                                  f"and seeds it lacks, or give another --out")
        before = json.loads((out / "summary.json").read_text()).get("run", {}) if (out / "summary.json").is_file() \
            else {}
        now = {"trial_command": command, "trials": trials, "concurrency": concurrency, "population_size": population}
        differ = [f"{key} {before[key]!r}, not {value!r}" for key, value in now.items()
                  if key in before and before[key] != value]
        if differ:   # an equal budget on every side, or the comparison means nothing
            raise ValueError(f"{out} was run with {'; '.join(differ)}: resume it with the same --epochs, --flags, "
                             f"--dataset, --trials, --concurrency and --population, or give another --out")
        rows.append(pd.read_csv(out / "trials.csv"))
        done = {(name, int(seed)) for name, seed in rows[0][["search", "seed"]].drop_duplicates().itertuples(False)}
        seeds = sorted(set(before.get("seeds", [])) | set(seeds))
    out.mkdir(parents=True, exist_ok=True)
    run = {"trial_command": command, "trials": trials, "concurrency": concurrency, "population_size": population,
           "seeds": seeds, "searches": list(searches)}
    for seed in seeds:
        for name in searches:
            if (name, seed) in done:
                continue
            tuner = copy.deepcopy(SEARCHES[name])
            tuner["class_args"]["seed"] = seed
            if name == "nsga2":   # its generation size
                tuner["class_args"]["population_size"] = population
            exp_id, wall, table = local.run_retrying(f"pareto-vs-tpe-{name}-{seed}", command, space, tuner, workdir,
                                                     trials, concurrency, log="pareto_vs_tpe")
            for i, (key, value) in enumerate({"search": name, "seed": seed, "experiment_id": exp_id,
                                              "minutes": round(wall / 60, 2)}.items()):
                table.insert(i, key, value)
            rows.append(table)
            every = pd.concat(rows, ignore_index=True)
            # both whole or neither (trial/files.py): a study stopped mid-write keeps the searches it finished
            write_files({out / "trials.csv": every.to_csv(index=False),
                         out / "summary.json": json_text(summarise_runs(every, column) | {"run": run})})
            best = pd.to_numeric(table.get(pareto.ACCURACY), errors="coerce").max()
            print(f"[pareto_vs_tpe] {name} seed {seed}: {exp_id}, {len(table)} trials in {wall / 60:.1f} min, best "
                  f"validation accuracy {best:.4f}", file=sys.stderr)
    return summarise_runs(pd.concat(rows, ignore_index=True), column) | {"run": run} if rows else {"run": run}


def equal_time(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of a run's trials.csv cut to equal wall-clock budgets: per seed, every search keeps the trials that
    ended within the minutes the quickest search of that seed took (from its first trial's start to its last
    trial's end), so a search that trains slower models is not given more time than the other."""
    t = trials.copy()
    start = t.groupby(["search", "seed"])["start_ms"].transform("min")
    t["_elapsed"] = t["end_ms"] - start
    took = t.groupby(["search", "seed"])["_elapsed"].max().groupby(level="seed").min()
    keep = t["_elapsed"] <= t["seed"].map(took)
    return t[keep].drop(columns="_elapsed")


def summarise_runs(trials: pd.DataFrame, column: str = "final_latency_ms", budget: float | None = None,
                   reference: tuple[float, float] | None = None) -> dict:
    """A run's trials.csv (a `search` and a `seed` column beside the export's) -> per search and seed the compare()
    figures against ONE reference point and budget over all searches and seeds; per search the mean hypervolume and
    mean best-under-budget accuracy with Student's t 95% intervals over seeds; per search but the last named, the
    paired per-seed differences from the last one (seeds both have). ValueError when a search-seed has no point."""
    order = list(dict.fromkeys(trials["search"]))
    groups = {(name, int(seed)): t for (name, seed), t in trials.groupby(["search", "seed"], sort=False)}
    result = compare({f"{name} seed {seed}": t for (name, seed), t in groups.items()}, column, budget, reference)
    runs = {key: result["searches"][f"{key[0]} seed {key[1]}"] for key in groups}
    minutes = {key: float(t["minutes"].iloc[0]) if "minutes" in t else float("nan") for key, t in groups.items()}

    def under(r):   # best accuracy under the budget; none found counts as the reference accuracy (no model)
        return r["best_under_budget"]["val_accuracy"] if r["best_under_budget"] else result["reference"]["val_accuracy"]

    by_search = {}
    for name in order:
        seeds = sorted(seed for n, seed in runs if n == name)
        hv = [runs[name, seed]["hypervolume"] for seed in seeds]
        acc = [under(runs[name, seed]) for seed in seeds]
        by_search[name] = {
            "seeds": seeds, "hypervolume": hv, "hypervolume_mean_ci": pareto.mean_ci(hv),
            "best_under_budget": acc, "best_under_budget_mean_ci": pareto.mean_ci(acc),
            "points": [runs[name, seed]["n_points"] for seed in seeds],
            "front_sizes": [len(runs[name, seed]["front"]) for seed in seeds],
            "best_val_accuracy": [runs[name, seed]["best_val_accuracy"] for seed in seeds],
            "minutes": [minutes[name, seed] for seed in seeds]}
    paired = {}
    base = order[-1]
    for name in order[:-1]:
        seeds = [seed for seed in by_search[name]["seeds"] if seed in by_search[base]["seeds"]]
        d_hv = [runs[name, seed]["hypervolume"] - runs[base, seed]["hypervolume"] for seed in seeds]
        d_acc = [under(runs[name, seed]) - under(runs[base, seed]) for seed in seeds]
        paired[f"{name} - {base}"] = {
            "seeds": seeds, "hypervolume": d_hv, "hypervolume_mean_ci": pareto.mean_ci(d_hv) if seeds else None,
            "hypervolume_wins": sum(d > 0 for d in d_hv),
            "best_under_budget": d_acc, "best_under_budget_mean_ci": pareto.mean_ci(d_acc) if seeds else None}
    return {"objective": column, "reference": result["reference"], "budget": result["budget"],
            "runs": [{"search": name, "seed": seed, "minutes": minutes[name, seed], **runs[name, seed]}
                     for name, seed in runs],
            "searches": by_search, "paired": paired}


def draw(trials: pd.DataFrame, summary: dict, path: Path) -> Path:
    """The study's fronts on one plane (experiments/results/plots.py): every search and seed, the budget marked."""
    from ..results import plots
    column = summary["objective"]
    runs = {}
    for (name, seed), t in trials.groupby(["search", "seed"], sort=False):
        p = points(t, column)
        runs[name, int(seed)] = (p, pareto.front(p, column))
    label = {"final_latency_ms": "batch-1 CPU latency, ms", "final_params": "parameters",
             "final_model_bytes": "exported model, bytes", "final_macs": "multiply-adds"}.get(column, column)
    return plots.fronts_by_search(runs, column, label, path, summary["budget"][column])


def render_summary(summary: dict) -> str:
    column, ref = summary["objective"], summary["reference"]
    name = column.removeprefix("final_")

    def ci(triple, scale=1.0, spec=".4f"):
        mean, low, high = (v * scale for v in triple)
        return f"{mean:{spec}}" + ("" if np.isnan(low) else f" ({low:{spec}} to {high:{spec}})")
    lines = [f"Reference point: validation accuracy {ref['val_accuracy']:.4f}, {name} {ref[column]:.4g}; "
             f"budget: {name} <= {summary['budget'][column]:.4g}", "",
             "| search | seed | points | diverged | front | hypervolume | best val accuracy | best under budget | "
             "minutes |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["runs"]:
        b = r["best_under_budget"]
        lines.append(f"| {r['search']} | {r['seed']} | {r['n_points']} | {r['n_diverged']} | {len(r['front'])} | "
                     f"{r['hypervolume']:.4g} | "
                     f"{r['best_val_accuracy']:.4f} | "
                     + (f"{b['val_accuracy']:.4f} ({b['trial_id']}, {b[column]:.3g}) | " if b else "none | ")
                     + f"{r['minutes']:.1f} |")
    lines += ["", "| search | seeds | hypervolume, mean (95% CI) | best under budget, mean (95% CI) |",
              "| --- | --- | --- | --- |"]
    for search, s in summary["searches"].items():
        lines.append(f"| {search} | {len(s['seeds'])} | {ci(s['hypervolume_mean_ci'], spec='.5g')} | "
                     f"{ci(s['best_under_budget_mean_ci'])} |")
    for pair, d in summary["paired"].items():
        if d["seeds"]:
            lines.append(f"\n{pair}, paired over seeds {', '.join(map(str, d['seeds']))}: hypervolume "
                         f"{ci(d['hypervolume_mean_ci'], spec='.4g')} (larger in {d['hypervolume_wins']} of "
                         f"{len(d['seeds'])}); best under budget {ci(d['best_under_budget_mean_ci'], 100, '.2f')} points")
    return "\n".join(lines) + "\n"


def render(result: dict) -> str:
    column, ref = result["objective"], result["reference"]
    name = column.removeprefix("final_")
    lines = [f"Reference point: validation accuracy {ref['val_accuracy']:.4f}, {name} {ref[column]:.4g}; "
             f"budget: {name} <= {result['budget'][column]:.4g}", "",
             f"| search | points | refused | front | hypervolume | best val accuracy | best under budget (trial, "
             f"val accuracy, {name}) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for search, s in result["searches"].items():
        b = s["best_under_budget"]
        lines.append(f"| {search} | {s['n_points']} | {s['n_refused']} | {len(s['front'])} | {s['hypervolume']:.5g} | "
                     f"{s['best_val_accuracy']:.4f} | "
                     + (f"{b['trial_id']}, {b['val_accuracy']:.4f}, {b[column]:.4g} |" if b else "none |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the searches, one after the other, then summarise")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds (default 0 1 2)")
    run.add_argument("--trials", type=int, default=48, help="trials per search (default 48)")
    run.add_argument("--epochs", type=int, default=1, help="epochs per trial (default 1)")
    run.add_argument("--flags", default="", help="extra trial flags, e.g. '--train_subset 5000'")
    run.add_argument("--searches", nargs="+", choices=list(SEARCHES), default=["nsga2", "tpe"],
                     help="which, in this order; the last is the one the others are compared with (default nsga2 tpe)")
    run.add_argument("--concurrency", type=int, default=2, help="trials at a time in each search (default 2)")
    run.add_argument("--population", type=int, default=8, help="NSGA-II's generation size (default 8)")
    run.add_argument("--dataset", default="fmnist", help="dataset and search_spaces/<dataset>.json (default fmnist)")
    run.add_argument("--workdir", default="runs/pareto_vs_tpe/nni-experiments", help="NNI's working directory")
    run.add_argument("--resume", action="store_true",
                     help="go on from --out's trials.csv: run only the searches and seeds it lacks")
    run.add_argument("--smoke", action="store_true", help="1 seed, 3 trials a search, a tiny subset: for CI")
    summary = sub.add_parser("summary", help="summarise a finished run's trials.csv again, running nothing")
    summary.add_argument("run_dir", help="the --out directory of a run")
    summary.add_argument("--equal-time", action="store_true",
                         help="cut every search of a seed to the wall-clock minutes of that seed's quickest search "
                              "(equal time instead of equal trials)")
    two = sub.add_parser("compare", help="compare two searches run some other way")
    two.add_argument("sources", nargs=2, help="two NNI experiment ids or trial CSVs: the multi-objective search first")
    two.add_argument("--names", nargs=2, default=["pareto", "tpe"], help="what to call them (default pareto tpe)")
    two.add_argument("--root", help="the experimentWorkingDirectory (default ~/nni-experiments)")
    for q in (run, summary, two):
        q.add_argument("--objective", default="final_latency_ms",
                       help="the trial-table column minimised against accuracy (default final_latency_ms)")
        q.add_argument("--out", default=None, help="run: the study's folder (default runs/pareto_vs_tpe); summary: "
                       "the JSON (default RUN_DIR/summary.json); compare: the JSON (default runs/pareto_vs_tpe.json)")
    for q in (summary, two):
        q.add_argument("--budget-ms", type=float, help="the budget on --objective (default: the median of all points)")
        q.add_argument("--reference", type=float, nargs=2, metavar=("ACCURACY", "OBJECTIVE"),
                       help="the hypervolume's reference point (default: the worst of all points on each axis)")
    args = p.parse_args(argv)
    if args.command == "compare" and args.names[0] == args.names[1]:
        p.error("--names: give the two searches different names")
    try:
        if args.command == "run":
            out = Path(args.out or "runs/pareto_vs_tpe")
            if args.smoke:
                args.seeds, args.trials, args.flags = args.seeds[:1], 3, f"{args.flags} {SMOKE_FLAGS}".strip()
            result = run_study(out, Path(args.workdir), args.seeds, args.trials, args.epochs, args.flags,
                               tuple(args.searches), args.concurrency, args.population, args.dataset, args.objective,
                               args.resume)
            text, path = render_summary(result), out / "summary.json"
            if (out / "trials.csv").is_file():
                draw(pd.read_csv(out / "trials.csv"), result, out / "fronts.png")
        elif args.command == "summary":
            trials = Path(args.run_dir) / "trials.csv"
            if not trials.is_file():
                raise FileNotFoundError(f"{trials} not found: `summary` takes the --out folder of a `run`")
            table = pd.read_csv(trials)
            if args.equal_time:
                table = equal_time(table)
            result = summarise_runs(table, args.objective, args.budget_ms,
                                    tuple(args.reference) if args.reference else None)
            result["equal_time"] = args.equal_time
            text, path = render_summary(result), Path(args.out or Path(args.run_dir) / "summary.json")
            before = Path(args.run_dir) / "summary.json"
            if before.is_file():   # what was run stays said
                result["run"] = json.loads(before.read_text()).get("run")
            write_file(path, json_text(result))
            draw(table, result, path.with_name("fronts.png"))
        else:
            tables = {name: pareto.load_trials(src, args.root) for name, src in zip(args.names, args.sources)}
            result = compare(tables, args.objective, args.budget_ms,
                             tuple(args.reference) if args.reference else None)
            result["sources"] = dict(zip(args.names, args.sources))
            text, path = render(result), Path(args.out or "runs/pareto_vs_tpe.json")
            write_file(path, json_text(result))
    except (FileNotFoundError, FileExistsError, sqlite3.Error, ValueError, OutputError, ExperimentError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
