"""Which search strategy finds a good Fashion-MNIST model fastest: NNI's Random, TPE with Medianstop (NNI's default
warm-up of 20 random draws, and a warm-up of 6), and Hyperband, on the same search space and the same wall-clock
budget, over several repeats.

    python -m experiments.studies.search_efficiency --minutes 20 --repeats 3 --out runs/efficiency
    python -m experiments.studies.search_efficiency --smoke --out /tmp/eff      # tiny data budget, for CI
    python -m experiments.studies.search_efficiency --from runs/efficiency --target 0.91   # summarize a finished study

Each run is a real local experiment (two concurrent trials, one torch thread each). It writes every trial
(trials.csv, after every run, so a study stopped part-way keeps what it finished); the best final validation accuracy
so far against wall-clock and against the number of trials ended (those the assessor stopped early count: they cost
time; those the budget cut do not) per strategy and repeat (curves.csv); the curves as efficiency.png (mean over
repeats once every repeat has a result, with the range); and summary.json with, per strategy and repeat, the best
accuracy at the budget, the trials ended and those with a final result, and the minutes it took to first reach the
--target validation accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from trial import REPO

from ..tuners import fixed_hyperband, fixed_tpe

SPACE = "search_spaces/fmnist.json"
MEDIANSTOP = {"name": "Medianstop", "class_args": {"optimize_mode": "maximize", "start_step": 1}}


STRATEGIES = {
    "random": {"tuner": {"name": "Random"}},
    "tpe_medianstop": {"tuner": fixed_tpe(), "assessor": MEDIANSTOP},
    # NNI's TPE draws its first 20 parameter sets at random (tpe_args.n_startup_jobs), more trials than a short CPU
    # search runs: this one models the results after 6
    "tpe6_medianstop": {"tuner": fixed_tpe(n_startup_jobs=6), "assessor": MEDIANSTOP},
    # the budget is the epochs: R = the epochs the other strategies give every trial, eta = 3
    "hyperband": {"tuner": fixed_hyperband(R=None, eta=3)},
}


def best_so_far(table: pd.DataFrame) -> pd.DataFrame:
    """One experiment's trials that ended within the budget, in end order: minutes since the experiment's first start,
    trial number, the trial's own final result (none for one the assessor stopped), the best final result so far."""
    ended = table.dropna(subset=["end_ms"]) if "end_ms" in table else table.iloc[:0]
    if "status" in ended:   # trials cut by the budget did not end on their own
        ended = ended[ended["status"] != "STOPPED_WITH_EXPERIMENT"]
    ended = ended.sort_values("end_ms")
    final = ended["final_default"] if "final_default" in ended else pd.Series(np.nan, index=ended.index)
    return pd.DataFrame({"minutes": (ended["end_ms"] - table["start_ms"].min()).to_numpy() / 60000,
                         "trial": np.arange(1, len(ended) + 1), "final": final.to_numpy(dtype=float),
                         "best": final.cummax().ffill().to_numpy(dtype=float)})


def curves_of(trials: pd.DataFrame) -> pd.DataFrame:
    """best_so_far for every strategy and repeat of a study's trials.csv."""
    curves = []
    for (name, repeat), table in trials.groupby(["strategy", "repeat"]):
        curve = best_so_far(table)
        curve.insert(0, "strategy", name)
        curve.insert(1, "repeat", repeat)
        curves.append(curve)
    return pd.concat(curves, ignore_index=True)


def run_study(out: Path, minutes: float, repeats: int, epochs: int, flags: str, max_trials: int,
              target: float = 0.9, strategies: list[str] | None = None) -> dict:
    from ..launch import local
    space = json.loads((REPO / SPACE).read_text())
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for repeat in range(repeats):
        for name in strategies or list(STRATEGIES):
            spec = STRATEGIES[name]
            tuner = json.loads(json.dumps(spec["tuner"]))
            command = f"python -m trial --dataset fmnist --threads 1 {flags}"
            if name == "hyperband":
                tuner["class_args"]["R"] = epochs
            else:
                command += f" --epochs {epochs}"
            if name != "hyperband":   # NNI's Hyperband takes no seed
                tuner.setdefault("class_args", {})["seed"] = repeat
            exp_id, wall, table = local.run_retrying(f"efficiency-{name}-{repeat}", command, space, tuner,
                                                     out / "nni-experiments", max_trials, 2, minutes * 60,
                                                     spec.get("assessor"), log="efficiency")
            table.insert(0, "strategy", name)
            table.insert(1, "repeat", repeat)
            table.insert(2, "experiment_id", exp_id)
            rows.append(table)
            best = best_so_far(table)["best"].max()
            print(f"[efficiency] {name} repeat {repeat}: {len(table)} trials, best {best:.4f} in {wall / 60:.1f} min",
                  file=sys.stderr)
            # written after every run, so a study stopped part-way keeps what it finished
            pd.concat(rows, ignore_index=True).to_csv(out / "trials.csv", index=False)
    result = {"minutes": minutes, "repeats": repeats, "epochs": epochs, "flags": flags}
    return write_summary(out, curves_of(pd.concat(rows, ignore_index=True)), result, target)


def minutes_to(curve: pd.DataFrame, target: float) -> float | None:
    """Minutes until the best-so-far first reached `target`; None where it never did."""
    reached = curve.loc[curve["best"] >= target, "minutes"]
    return float(reached.min()) if len(reached) else None


def summarize(curves: pd.DataFrame, target: float) -> dict:
    """Per strategy, one entry per repeat: best final result at the budget, trials that ended (those the assessor
    stopped included), trials with a final result, and minutes to first reach `target`."""
    summary = {}
    for name, c in curves.groupby("strategy"):
        repeats = [g.sort_values("minutes") for _, g in c.groupby("repeat")]
        s = {"best_at_budget": [float(g["best"].max()) for g in repeats],
             "trials": [int(g["trial"].max()) for g in repeats],
             "with_result": [int(g["final"].notna().sum()) for g in repeats],
             f"minutes_to_{target:g}": [minutes_to(g, target) for g in repeats]}
        s["mean_best"] = float(np.mean(s["best_at_budget"]))
        summary[name] = s
    return summary


def write_summary(out: Path, curves: pd.DataFrame, result: dict, target: float) -> dict:
    result = {**result, "target": target, "strategies": summarize(curves, target)}
    curves.to_csv(out / "curves.csv", index=False)
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(curves, result.get("minutes") or float(curves["minutes"].max()), out / "efficiency.png", target)
    return result


def merge(studies: list[str], out: Path, target: float) -> dict:
    """Summarize (again) the trials of studies already run, merged into `out`: they must share their budget, epochs
    and trial flags, or their curves would not compare."""
    trials, settings = [], None
    for d in map(Path, studies):
        if not (d / "trials.csv").is_file():
            raise ValueError(f"{d / 'trials.csv'} does not exist: --from takes the --out directory of a study")
        old = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
        mine = {k: old.get(k) for k in ("minutes", "epochs", "flags")}
        if settings is not None and mine != settings:
            raise ValueError(f"{d} ran with {mine}, {studies[0]} with {settings}: only studies with the same "
                             f"minutes, epochs and flags compare")
        settings = mine
        trials.append(pd.read_csv(d / "trials.csv"))
    trials = pd.concat(trials, ignore_index=True)
    key = ["strategy", "repeat", "trial_id"] if "trial_id" in trials else ["strategy", "repeat", "start_ms"]
    if trials.duplicated(key).any():
        raise ValueError("the studies ran the same strategy and repeat more than once: merge studies of different "
                         "strategies or repeats")
    out.mkdir(parents=True, exist_ok=True)
    trials.to_csv(out / "trials.csv", index=False)
    settings = {k: v for k, v in settings.items() if v is not None}
    return write_summary(out, curves_of(trials), {**settings, "repeats": int(trials["repeat"].nunique())}, target)


def plot(curves: pd.DataFrame, minutes: float, path: Path, target: float | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, c) in enumerate(curves.groupby("strategy")):
        for ax, x, grid in ((axes[0], "minutes", np.linspace(0, minutes, 100)),
                            (axes[1], "trial", np.arange(1, c["trial"].max() + 1))):
            # each repeat as a step function on a common grid (NaN before its first finished trial)
            runs = []
            for _, g in c.groupby("repeat"):
                idx = np.searchsorted(g[x].to_numpy(), grid, side="right") - 1
                runs.append(np.where(idx >= 0, g["best"].to_numpy()[np.clip(idx, 0, None)], np.nan))
            runs = np.array(runs)
            with warnings.catch_warnings():   # grid points before any repeat's first result are all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(runs, axis=0), np.nanmin(runs, axis=0), np.nanmax(runs, axis=0)
            mean[~np.isfinite(runs).all(axis=0)] = np.nan   # a mean over the repeats that have a result would dip
            ax.plot(grid, mean, color=f"C{i}", label=name)
            ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.15)
    axes[0].set_xlabel("wall-clock minutes")
    axes[1].set_xlabel("trials ended (stopped early included)")
    for ax in axes:
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.set_ylabel("best validation accuracy so far")
        ax.legend(loc="lower right")
    fig.suptitle("Search efficiency on Fashion-MNIST (mean over repeats once all have a result; band: range)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20, help="wall-clock budget per strategy and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial (Hyperband: the largest budget, R)")
    p.add_argument("--flags", default="", help="extra trial flags, e.g. '--train_subset 12000'")
    p.add_argument("--max-trials", type=int, default=200)
    p.add_argument("--smoke", action="store_true", help="1 repeat, 4 trials each, tiny subset: for CI")
    p.add_argument("--out", default="runs/efficiency")
    p.add_argument("--target", type=float, default=0.9,
                   help="validation accuracy whose time to reach the summary reports (default 0.9)")
    p.add_argument("--strategies", nargs="+", choices=list(STRATEGIES), help="run only these (default: all)")
    p.add_argument("--from", dest="existing", metavar="DIR", nargs="+",
                   help="summarize and plot the trials.csv of studies already run (their --out directories), running "
                        "nothing; several are merged into --out")
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.repeats, args.epochs, args.max_trials = 3, 1, 3, 4
        args.flags = (args.flags + " --train_subset 256 --val_size 128 --batch_size 64 --eval_test false").strip()
    if args.existing:
        if len(args.existing) == 1 and args.out == p.get_default("out"):
            args.out = args.existing[0]
        try:
            result = merge(args.existing, Path(args.out), args.target)
        except ValueError as err:
            p.error(str(err))
    else:
        result = run_study(Path(args.out), args.minutes, args.repeats, args.epochs, args.flags, args.max_trials,
                           args.target, args.strategies)
    key = f"minutes_to_{args.target:g}"
    for name, s in result["strategies"].items():
        reached = ", ".join("never" if m is None else f"{m:.1f}" for m in s[key])
        print(f"{name:>15}: best {s['mean_best']:.4f} (repeats {', '.join(f'{b:.4f}' for b in s['best_at_budget'])})"
              f", trials ended {s['trials']} (with a result {s['with_result']}), minutes to {args.target:g}: {reached}")
    print(f"-> {Path(args.out) / 'efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
