"""The report's figures, each a function that writes one PNG (matplotlib, no display needed).

Inputs are the trial table of `results.export` (columns trial_id, status, start_ms, intermediate, param_*,
final_default) and the retraining runs of `results.retrain`.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .export import STOPPED_STATES  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def param_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("param_") and trials[c].nunique(dropna=True) > 1]


def optimization_history(trials: pd.DataFrame, path: Path) -> Path:
    done = trials.dropna(subset=["final_default"]).sort_values("sequence")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, label in ((axes[0], np.arange(1, len(done) + 1), "trial number"),
                         (axes[1], (done["end_ms"] - trials["start_ms"].min()) / 60000, "wall-clock minutes")):
        order = np.argsort(np.asarray(x))
        xs, ys = np.asarray(x)[order], done["final_default"].to_numpy()[order]
        ax.scatter(xs, ys, s=14, alpha=0.6, label="trial")
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="best so far")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy")
        ax.legend(loc="lower right")
    fig.suptitle("Optimisation history")
    return _save(fig, path)


def learning_curves(trials: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _, row in trials.iterrows():
        curve = json.loads(row["intermediate"]) if isinstance(row["intermediate"], str) else []
        if not curve:
            continue
        stopped = row["status"] in STOPPED_STATES
        ax.plot(range(1, len(curve) + 1), curve, color="C3" if stopped else "C0", alpha=0.5,
                linestyle="--" if stopped else "-", marker="x" if stopped else None, markevery=[len(curve) - 1])
    ax.plot([], [], color="C0", label="completed")
    ax.plot([], [], color="C3", linestyle="--", marker="x", label="stopped early (assessor / cancelled)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Intermediate results of every trial")
    ax.legend()
    return _save(fig, path)


def _encoded(trials: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Numbers stay numbers; categories (and booleans) become codes in sorted order."""
    out = pd.DataFrame(index=trials.index)
    for c in cols:
        values = trials[c]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.map(lambda v: not isinstance(v, bool)).all():
            out[c] = numeric
        else:
            out[c] = values.map(str).astype("category").cat.codes
    return out


def accuracy_vs_params(trials: pd.DataFrame, path: Path) -> Path:
    done = trials.dropna(subset=["final_default"])
    cols = param_columns(done) or ["sequence"]
    n = len(cols)
    fig, axes = plt.subplots((n + 3) // 4, min(n, 4), figsize=(3.2 * min(n, 4), 2.8 * ((n + 3) // 4)), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        values = done[c]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.map(lambda v: not isinstance(v, bool)).all():
            ax.scatter(numeric, done["final_default"], s=12, alpha=0.7)
            if c.endswith(("learning_rate", "weight_decay")) and (numeric > 0).all():
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        else:
            cats = sorted(values.map(str).unique())
            codes = values.map(str).map({v: i for i, v in enumerate(cats)})
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(codes))
            ax.scatter(codes + jitter, done["final_default"], s=12, alpha=0.7)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=7)
        ax.set_title(c.removeprefix("param_"), fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.supylabel("validation accuracy")
    return _save(fig, path)


def parallel_coordinates(trials: pd.DataFrame, path: Path) -> Path:
    done = trials.dropna(subset=["final_default"])
    cols = param_columns(done)
    enc = _encoded(done, cols)
    enc = (enc - enc.min()) / (enc.max() - enc.min()).replace(0, 1)
    enc["accuracy"] = done["final_default"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols) + 2), 4.5))
    cmap = plt.get_cmap("viridis")
    lo, hi = enc["accuracy"].min(), enc["accuracy"].max()
    for _, row in enc.sort_values("accuracy").iterrows():
        shade = (row["accuracy"] - lo) / (hi - lo) if hi > lo else 1.0
        ax.plot(range(len(cols)), row[cols].to_numpy(dtype=float), color=cmap(shade), alpha=0.7)
    ax.set_xticks(range(len(cols)), [c.removeprefix("param_") for c in cols], rotation=30, ha="right")
    ax.set_ylabel("value (scaled to [0, 1]; categories as codes)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="validation accuracy")
    ax.set_title("Parallel coordinates")
    return _save(fig, path)


def importance(trials: pd.DataFrame, path: Path, seed: int = 0) -> tuple[Path, dict]:
    """Permutation importance of a random forest fitted to (parameters -> validation accuracy)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance
    done = trials.dropna(subset=["final_default"])
    cols = param_columns(done)
    scores: dict[str, float] = {}
    if cols and len(done) >= 4:
        x, y = _encoded(done, cols).to_numpy(dtype=float), done["final_default"].to_numpy(dtype=float)
        forest = RandomForestRegressor(n_estimators=200, random_state=seed).fit(x, y)
        result = permutation_importance(forest, x, y, n_repeats=10, random_state=seed)
        scores = {c.removeprefix("param_"): float(m) for c, m in zip(cols, result.importances_mean)}
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(len(scores), 3) + 1.2))
    items = sorted(scores.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel("permutation importance (random forest, drop in R^2)")
    ax.set_title("Hyperparameter importance" + ("" if scores else ": too few finished trials"))
    return _save(fig, path), scores


def confusion(matrix, classes, path: Path, title: str) -> Path:
    """The confusion matrix (rows: true class) labelled with the class names; past 20 classes the figure grows and the
    counts are shown by colour only (hundreds of classes would be unreadable numbers)."""
    from sklearn.metrics import ConfusionMatrixDisplay
    side = min(40, max(7, 0.3 * len(classes)))
    fig, ax = plt.subplots(figsize=(side, side * 6 / 7))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes)).plot(
        ax=ax, xticks_rotation=45 if len(classes) <= 20 else 90, colorbar=len(classes) > 20,
        include_values=len(classes) <= 20)
    ax.set_title(title)
    return _save(fig, path)


def comparison_bars(groups: dict[str, list[float]], path: Path, metric: str = "test accuracy") -> Path:
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2, 4))
    names = list(groups)
    means = [np.mean(groups[n]) for n in names]
    stds = [np.std(groups[n], ddof=1) if len(groups[n]) > 1 else 0 for n in names]
    ax.bar(names, means, yerr=stds, capsize=6, color=[f"C{i}" for i in range(len(names))])
    for i, n in enumerate(names):
        ax.scatter([i] * len(groups[n]), groups[n], color="k", s=10, zorder=3)
    low = min(min(v) for v in groups.values())
    ax.set_ylim(max(0, low - 0.02), min(1, max(means) + max(stds) + 0.01))
    ax.set_ylabel(f"{metric} (mean +- std over seeds; dots: runs)")
    ax.set_title("Winner vs baseline")
    return _save(fig, path)


def misclassified(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, classes, path: Path,
                  limit: int = 36) -> Path:
    """images: uint8 [N, C, H, W] of the test split."""
    wrong = np.flatnonzero(y_true != y_pred)[:limit]
    cols = 6
    rows = max(1, (len(wrong) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        img = images[i].transpose(1, 2, 0)
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(f"pred {classes[y_pred[i]]}\ntrue {classes[y_true[i]]}", fontsize=7)
    fig.suptitle(f"Misclassified test images ({len(np.flatnonzero(y_true != y_pred))} in all, first {len(wrong)})")
    return _save(fig, path)


def winner_vs_hand_design(rows: list[dict], path: Path) -> Path:
    """One panel per row of experiments.results.overview: the searched winner and the strongest hand design under the
    report's protocol, mean +- std over seeds (dots: the seeds), the dataset's bar as a dashed line where it has a
    number, and winner minus hand design with its 95% CI (Welch) under the panel."""
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 4.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        accs = [r["winner_accuracies"], r["hand_accuracies"]]
        means = [float(np.mean(a)) for a in accs]
        stds = [float(np.std(a, ddof=1)) if len(a) > 1 else 0.0 for a in accs]
        ax.bar([0, 1], means, yerr=stds, capsize=6, color=["C0", "C1"], width=0.6)
        for i, a in enumerate(accs):
            ax.scatter([i] * len(a), a, color="k", s=10, zorder=3)
        values = [v for a in accs for v in a]
        if r.get("bar") is not None:
            ax.axhline(r["bar"], color="C3", linestyle="--", linewidth=1)
            ax.text(0.02, 0.98, f"dashed: the bar, {100 * r['bar']:.1f}%", color="C3", fontsize=7,
                    transform=ax.transAxes, va="top")
            values.append(r["bar"])
        span = max(max(values) - min(values), 0.002)
        ax.set_ylim(min(values) - 0.6 * span, max(values) + 0.4 * span)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=2 if span < 0.01 else 1))
        ax.set_xticks([0, 1], [f"searched\n{r['winner']}", f"hand design\n{r['hand']}"], fontsize=7)
        ax.set_xlim(-0.6, 1.6)
        ci = r["ci95"]
        ax.set_title(f"{r['dataset_name']} ({r['report']}, {r['epochs']} epochs)", fontsize=9)
        ax.set_xlabel(f"winner - hand: {100 * r['diff']:+.2f} points\n(95% CI {100 * ci[0]:+.2f} to "
                      f"{100 * ci[1]:+.2f}, p = {r['p_value']:.2g})", fontsize=8)
    axes[0][0].set_ylabel("test accuracy, mean +- std over seeds")
    fig.suptitle("Searched winner vs the strongest hand design, same protocol")
    return _save(fig, path)


def pareto_front(points: pd.DataFrame, front_rows: pd.DataFrame, column: str, label: str, path: Path,
                 chosen: list[str] = ()) -> Path:
    """Validation accuracy against `column` (latency or size, lower is better) for every candidate trial, the Pareto
    front as a step line through its points, and `chosen` trials (retrained in the report) ringed and named."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = pd.to_numeric(points[column], errors="coerce")
    ax.scatter(x, points["final_default"], s=14, alpha=0.5, color="C0", label="trial")
    fx, fy = pd.to_numeric(front_rows[column], errors="coerce"), front_rows["final_default"]
    ax.step(fx, fy, where="post", color="C3", alpha=0.7)
    ax.scatter(fx, fy, s=30, color="C3", label=f"Pareto front ({len(front_rows)})", zorder=3)
    for _, row in front_rows[front_rows["trial_id"].astype(str).isin(list(chosen))].iterrows():
        ax.scatter([row[column]], [row["final_default"]], s=140, facecolors="none", edgecolors="k", zorder=4)
        ax.annotate(str(row["trial_id"]), (row[column], row["final_default"]), textcoords="offset points",
                    xytext=(6, -10), fontsize=7)
    if len(x) and x.min() > 0 and x.max() / x.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"{label} (lower is better)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Validation accuracy against {label}")
    ax.legend(loc="lower right")
    return _save(fig, path)


def fronts_by_search(runs: dict[tuple[str, int], tuple[pd.DataFrame, pd.DataFrame]], column: str, label: str,
                     path: Path, budget: float | None = None) -> Path:
    """Several searches' Pareto fronts on one plane: per (search, seed) its candidate trials (faint) and its front
    (a step line), one colour per search, one line style per seed; the budget on `column` as a dashed line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(name for name, _ in runs))}
    styles = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)))
    seeds = sorted({seed for _, seed in runs})
    for (name, seed), (points, front_rows) in runs.items():
        x = pd.to_numeric(points[column], errors="coerce")
        ax.scatter(x, points["final_default"], s=8, alpha=0.25, color=colours[name])
        fx, fy = pd.to_numeric(front_rows[column], errors="coerce"), front_rows["final_default"]
        ax.step(fx, fy, where="post", color=colours[name], linestyle=styles[seeds.index(seed) % len(styles)],
                alpha=0.85, label=f"{name} seed {seed}")
        ax.scatter(fx, fy, s=18, color=colours[name], zorder=3)
    if budget is not None:
        ax.axvline(budget, color="k", linestyle="--", linewidth=0.8, label=f"budget {budget:.3g}")
    everything = pd.concat([pd.to_numeric(p[column], errors="coerce") for p, _ in runs.values()])
    if len(everything) and everything.min() > 0 and everything.max() / everything.min() > 5:
        ax.set_xscale("log")
        for axis_ticks in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
            axis_ticks(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"{label} (lower is better)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Fronts of validation accuracy against {label}, per search and seed")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    return _save(fig, path)
