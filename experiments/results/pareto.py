"""Pareto fronts of a search's trials: validation accuracy against latency and against size.

    python -m experiments.results.pareto EXPERIMENT_ID [--root DIR] [--within 1.0]
    python -m experiments.results.pareto trials.csv --within 0.5         # a table of experiments.results.export

A trial is on a front when no other finished trial is at least as good on both axes and better on one (accuracy
higher, latency or size lower); trials with equal figures are all kept. The points are the finished trials
(SUCCEEDED, with a final validation accuracy) that were not refused by a constraint (`max_params`, `max_latency_ms`:
such a trial reports accuracy 0.0 without training, and ranks last: it is no model to ship). The axes are the
columns of the trial table (experiments/results/export.py), i.e. the keys of each trial's final metric dict:
`final_latency_ms` (batch-1 CPU latency) and size as `final_model_bytes` where the trials report it, else
`final_params`. Also here: the exact 2-D hypervolume of a front against a stated reference point (the area the front
dominates, up to that point; larger is better, and only fronts measured against the same point compare), the one-line
answer "the smallest / fastest model within X points of the best", and the points of a front a report retrains.
The report's Pareto section (experiments/results/report.py) and experiments/studies/pareto_vs_tpe.py use them.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ACCURACY = "final_default"
LATENCY = ("final_latency_ms",)
SIZE = ("final_model_bytes", "final_params")
# how each axis reads in a sentence and a table
LABELS = {"final_latency_ms": ("latency", "ms, batch 1 on the CPU", "fastest", "faster"),
          "final_latency_ms_gpu": ("GPU latency", "ms, batch 1 on the GPU", "fastest", "faster"),
          "final_model_bytes": ("size", "bytes of the exported model", "smallest", "smaller"),
          "final_params": ("size", "parameters", "smallest", "smaller"),
          "final_macs": ("multiply-adds", "MACs", "cheapest", "cheaper")}


def front_mask(points, directions) -> np.ndarray:
    """Which rows of `points` (N x M) no other row dominates; `directions` one of "maximize"/"minimize" per column.
    A row dominates another when it is at least as good in every column and better in one: equal rows do not
    dominate each other, so ties are all kept. Rows with a NaN are never on the front."""
    p = np.asarray(points, dtype=float).reshape(len(points), -1)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])   # as minimisation
    if p.shape[1] != len(sign) or not set(directions) <= {"maximize", "minimize"}:
        raise ValueError(f"directions {list(directions)} do not fit points with {p.shape[1]} columns "
                         f"(each maximize or minimize)")
    q = p * sign
    ok = ~np.isnan(q).any(axis=1)
    mask = np.zeros(len(q), dtype=bool)
    for i in np.flatnonzero(ok):
        others = q[ok]
        dominated = ((others <= q[i]).all(axis=1) & (others < q[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask


def hypervolume_2d(points, directions, reference) -> float:
    """The exact area dominated by `points` (N x 2) and bounded by `reference` (one value per column, in the
    columns' units): the union of the rectangles between each point and the reference. Points not strictly better
    than the reference in both columns add nothing. Fronts compare by it only against the same reference point."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    if len(sign) != 2:
        raise ValueError(f"hypervolume_2d takes two objectives, got directions {list(directions)}")
    q, r = p * sign, np.asarray(reference, dtype=float) * sign
    q = q[~np.isnan(q).any(axis=1) & (q < r).all(axis=1)]
    if not len(q):
        return 0.0
    q = q[front_mask(q, ("minimize", "minimize"))]
    q = q[np.lexsort((q[:, 1], q[:, 0]))]          # x ascending; along a front y then descends
    area, previous_y = 0.0, r[1]
    for x, y in q:
        area += (r[0] - x) * (previous_y - y)
        previous_y = min(previous_y, y)
    return float(area)


def _flag(done: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column of the final metric dict; False where a trial does not report it."""
    if column not in done:
        return pd.Series(False, index=done.index)
    return done[column].map(lambda v: str(v).lower() in ("true", "1", "1.0"))


def diverged(trials: pd.DataFrame) -> int:
    """How many finished trials diverged (their loss went non-finite: they report accuracy 0.0 and
    `final_diverged`; no model to ship, and left off every front)."""
    done = trials[trials["status"] == "SUCCEEDED"] if "status" in trials else trials.iloc[0:0]
    return int(_flag(done, "final_diverged").sum())


def candidates(trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(the finished trials that can be on a front, how many finished trials a constraint refused). A refused trial
    says so (`final_refused`) or reports a validation accuracy of exactly 0 (no trained network scores that) without
    having diverged; a diverged trial (`final_diverged`, see diverged()) is left out too but not counted as refused."""
    if trials.empty or ACCURACY not in trials:
        return trials.iloc[0:0], 0
    done = trials[(trials["status"] == "SUCCEEDED") & trials[ACCURACY].notna()]
    lost = _flag(done, "final_diverged")
    refused = ((done[ACCURACY] == 0) & ~lost) | _flag(done, "final_refused")
    return done[~refused & ~lost], int(refused.sum())


def axis(trials: pd.DataFrame, kind: str) -> str | None:
    """The column a front of `kind` ("latency" or "size") is drawn against: the first of its columns that every
    candidate trial reports (size: model_bytes, else params); None when the trials report none."""
    for column in {"latency": LATENCY, "size": SIZE}[kind]:
        if column in trials and len(trials) and pd.to_numeric(trials[column], errors="coerce").notna().all():
            return column
    return None


def front(trials: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows of `trials` on the front of validation accuracy (maximised) against `column` (minimised), sorted by
    `column` (smallest first)."""
    points = np.column_stack([trials[ACCURACY].astype(float), pd.to_numeric(trials[column], errors="coerce")])
    on = trials[front_mask(points, ("maximize", "minimize"))] if len(trials) else trials
    return on.sort_values([column, ACCURACY], ascending=[True, False])


def within(trials: pd.DataFrame, column: str, points: float) -> dict | None:
    """The trial lowest in `column` among those within `points` percentage points of the best validation accuracy
    (ties: the more accurate), with the best trial: {best, chosen, threshold} (rows as dicts); None without trials."""
    if trials.empty:
        return None
    best = trials.sort_values([ACCURACY, column], ascending=[False, True]).iloc[0]
    threshold = float(best[ACCURACY]) - points / 100
    near = trials[trials[ACCURACY] >= threshold - 1e-12]
    chosen = near.sort_values([column, ACCURACY], ascending=[True, False]).iloc[0]
    return {"column": column, "points": points, "threshold": threshold, "best": chosen_fields(best, column),
            "chosen": chosen_fields(chosen, column)}


def chosen_fields(row: pd.Series, column: str) -> dict:
    return {"trial_id": str(row["trial_id"]), "val_accuracy": float(row[ACCURACY]), column: float(row[column])}


def within_line(answer: dict) -> str:
    """The one-line answer: `the fastest model within 1.0 points of the best ...`."""
    column, best, chosen = answer["column"], answer["best"], answer["chosen"]
    name, unit, superlative, comparative = LABELS.get(column, (column, "", "lowest", "lower"))
    ratio = best[column] / chosen[column] if chosen[column] else float("nan")
    same = chosen["trial_id"] == best["trial_id"]
    points = f"{answer['points']:g} point{'' if answer['points'] == 1 else 's'}"
    return (f"The {superlative} model within {points} of the best validation accuracy "
            f"({best['val_accuracy']:.4f}, trial {best['trial_id']}, {fmt(best[column])} {unit}): "
            + ("that trial itself; no model within reach is lower in " + name + "." if same else
               f"trial {chosen['trial_id']}, {chosen['val_accuracy']:.4f} validation accuracy, "
               f"{fmt(chosen[column])} {unit} ({ratio:.1f}x {comparative})."))


def fmt(value: float) -> str:
    """A latency, size or count as a table shows it: 0.168, 12.3, 445,453."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def spread(front_rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to n points of a front spread along it by accuracy: the most accurate and the lowest always, evenly
    between; the most accurate first."""
    ordered = front_rows.sort_values(ACCURACY, ascending=False)
    if n <= 0 or ordered.empty:
        return ordered.iloc[0:0]
    if len(ordered) <= n:
        return ordered
    picks = sorted({round(i * (len(ordered) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]
    return ordered.iloc[picks]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t confidence interval of the mean over seeds; NaN bounds for one value."""
    from scipy import stats
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def summarise(trials: pd.DataFrame, points: float = 1.0) -> dict:
    """Both fronts of a trial table: {"n_candidates", "n_refused", "n_diverged", "fronts": {kind: {"column", "trials": [...],
    "within": answer}}}; a kind the trials do not report is left out (latency before trials measured it)."""
    done, n_refused = candidates(trials)
    out = {"n_candidates": int(len(done)), "n_refused": n_refused, "n_diverged": diverged(trials),
           "within_points": points, "fronts": {}}
    for kind in ("latency", "size"):
        column = axis(done, kind)
        if column is None or done.empty:
            continue
        rows = front(done, column)
        out["fronts"][kind] = {"column": column,
                               "trials": [chosen_fields(r, column) for _, r in rows.iterrows()],
                               "within": within(done, column, points)}
    return out


def load_trials(source: str, root=None) -> pd.DataFrame:
    """A trial table: a CSV of experiments.results.export, or an experiment id (read from NNI's database)."""
    from .export import experiment_dir, load_experiment
    if source.endswith(".csv") and Path(source).is_file():
        return pd.read_csv(source)
    return load_experiment(experiment_dir(source, root))[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="an NNI experiment id, or a trials CSV of experiments.results.export")
    p.add_argument("--root", help="the experimentWorkingDirectory (default ~/nni-experiments)")
    p.add_argument("--within", type=float, default=1.0, help="percentage points of validation accuracy the "
                                                              "smallest / fastest model may give up (default 1.0)")
    args = p.parse_args(argv)
    try:
        result = summarise(load_trials(args.source, args.root), args.within)
    except (FileNotFoundError, sqlite3.Error) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{result['n_candidates']} finished trials ({result['n_refused']} refused by a constraint and "
          f"{result['n_diverged']} diverged, left out)")
    for kind, f in result["fronts"].items():
        print(f"\nfront: validation accuracy against {f['column'].removeprefix('final_')}")
        for t in f["trials"]:
            print(f"  {t['trial_id']}  {t['val_accuracy']:.4f}  {fmt(t[f['column']])}")
        print(within_line(f["within"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
