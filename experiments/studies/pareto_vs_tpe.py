"""Does a multi-objective search find better accuracy-latency trade-offs than TPE on accuracy alone, for the same
budget? Two finished NNI experiments (or their exported trial tables) compared by the hypervolume of their fronts,
against one stated reference point, and by the best model each found under a stated latency budget.

    python -m experiments.studies.pareto_vs_tpe PARETO_ID TPE_ID [--root DIR] [--budget-ms 2.0] \
        [--reference 0.80 10.0] [--out runs/pareto_vs_tpe.json]
    python -m experiments.studies.pareto_vs_tpe runs/pareto/trials.csv runs/tpe/trials.csv --names nsga2 tpe

Each source is an experiment id (read from NNI's database under --root, the trials' own records) or a CSV of
experiments.results.export. Points are the finished trials that a constraint did not refuse (experiments/results/
pareto.py); the front is validation accuracy (maximised) against `--objective` (default final_latency_ms,
minimised; final_params or final_model_bytes for size). The hypervolume is the area the front dominates up to the
reference point (accuracy, latency): the same point for both, by default the worst accuracy and the worst latency of
all points of both searches, stated in the output. A larger hypervolume is a front closer to the ideal corner.
"Best under the budget" is the most accurate trial whose latency is at most --budget-ms (default: the median latency
of all points, stated). Prints a markdown table and writes the JSON to --out. The experiments themselves are run
with nni_configs/fmnist_pareto.yml and nni_configs/fmnist.yml (docs/pareto.md).
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from trial.files import OutputError, json_text, write_file

from ..results import pareto

DIRECTIONS = ("maximize", "minimize")


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
            "hypervolume": pareto.hypervolume_2d(xy, DIRECTIONS, reference),
            "front": [pareto.chosen_fields(r, column) for _, r in front.iterrows()],
            "best_val_accuracy": float(p[pareto.ACCURACY].max()),
            "best_under_budget": pareto.chosen_fields(best, column) if best is not None else None}
    return out


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
    p.add_argument("sources", nargs=2, help="two NNI experiment ids or trial CSVs: the multi-objective search first")
    p.add_argument("--names", nargs=2, default=["pareto", "tpe"], help="what to call them (default pareto tpe)")
    p.add_argument("--root", help="the experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--objective", default="final_latency_ms",
                   help="the trial-table column minimised against accuracy (default final_latency_ms)")
    p.add_argument("--budget-ms", type=float, help="the budget on --objective (default: the median of all points)")
    p.add_argument("--reference", type=float, nargs=2, metavar=("ACCURACY", "OBJECTIVE"),
                   help="the hypervolume's reference point (default: the worst of all points on each axis)")
    p.add_argument("--out", default="runs/pareto_vs_tpe.json", help="the JSON result")
    args = p.parse_args(argv)
    if args.names[0] == args.names[1]:
        p.error("--names: give the two searches different names")
    try:
        tables = {name: pareto.load_trials(src, args.root) for name, src in zip(args.names, args.sources)}
        result = compare(tables, args.objective, args.budget_ms, tuple(args.reference) if args.reference else None)
        result["sources"] = dict(zip(args.names, args.sources))
        text = render(result)
        write_file(Path(args.out), json_text(result))
    except (FileNotFoundError, sqlite3.Error, ValueError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
