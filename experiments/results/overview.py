"""The searched winner against the strongest hand design, per report, from the stored summaries: a table and a chart.

    python -m experiments.results.overview              # the headline reports -> docs/img/winner_vs_hand_design.png
    python -m experiments.results.overview results/fmnist-nq3jy2aw results/fmnist-vfu9drq3 --out chart.png \
        --json rows.json

A report folder holds the report's summary.json (experiments.report: its winner group `winner1_*` and the baselines
it retrained beside it, `baseline_*`) and, where a hand design was retrained apart under the same protocol,
`baseline_*/summary.json` (experiments.results.retrain). Both are read with experiments.results.compare's
load_summaries, which refuses files whose dataset, protocol, epochs, seeds or smoke flag differ. A hand design is a
`baseline_<name>` group with a params file baselines/<name>.json (an architecture found by a NAS search and retrained
as a baseline is not one); the strongest is the one with the highest mean test accuracy. Per report it prints and
returns: the dataset, the winner and the hand design with mean, std and per-seed test accuracies, and winner minus
hand design with Welch's t-test and its 95% confidence interval (experiments.results.compare.welch). The chart
(experiments.results.plots.winner_vs_hand_design) draws mean +- std bars with the seeds as dots and the dataset's bar.
Rerun it when a folder gains a baseline_*/summary.json: the chart is drawn from the files, never by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trial import REPO

from .compare import CompareError, load_summaries, welch

# the report per dataset that the bars are read on (docs/results.md says why each)
HEADLINE = ("results/cifar10-qvjmzbis", "results/fmnist-sci3mz94", "results/mnist-b8lsvgo9")
# the bars the searches are held to (test accuracy); CIFAR-10's is relative: at least the best hand-designed fast
# trainer given the same time, so it has no number to draw
BARS = {"mnist": 0.997, "fmnist": 0.950, "cifar10": None}
NAMES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
OUT = "docs/img/winner_vs_hand_design.png"


def _short(path) -> str:
    """A path inside the repository relative to it (as the docs cite files), any other as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def is_hand_design(group: str, baselines_dir: Path = REPO / "baselines") -> bool:
    return group.startswith("baseline_") and (baselines_dir / f"{group.removeprefix('baseline_')}.json").is_file()


def report_row(folder: str | Path, baselines_dir: Path = REPO / "baselines") -> dict:
    """The row of one report folder (see the module docstring). Raises FileNotFoundError without a summary.json,
    CompareError for summaries of different protocols, and ValueError for a folder without a winner or a hand
    design."""
    folder = Path(folder)
    files = [folder / "summary.json", *sorted(folder.glob("baseline_*/summary.json"))]
    protocol, groups, notes = load_summaries(files)
    winners = sorted(g for g in groups if g.startswith("winner"))
    hands = [g for g in groups if is_hand_design(g, baselines_dir)]
    if not winners or not hands:
        raise ValueError(f"{folder}: needs a winner* group and a baseline_* group with a file in {baselines_dir}; "
                         f"has {', '.join(groups)}")
    winner = winners[0]
    hand = max(hands, key=lambda g: groups[g]["test_accuracy_mean"])
    w, h = groups[winner], groups[hand]
    dataset = protocol["dataset"]
    return {"report": folder.name, "dataset": dataset, "dataset_name": NAMES.get(dataset, dataset),
            "epochs": protocol["epochs"], "seeds": protocol["seeds"], "protocol": protocol["protocol"],
            "winner": winner.split("_", 1)[1], "winner_mean": w["test_accuracy_mean"],
            "winner_std": w["test_accuracy_std"], "winner_accuracies": w["test_accuracies"],
            "hand": hand.removeprefix("baseline_"), "hand_file": _short(h["file"]),
            "hand_mean": h["test_accuracy_mean"], "hand_std": h["test_accuracy_std"],
            "hand_accuracies": h["test_accuracies"],
            "other_hand_designs": {g.removeprefix("baseline_"): groups[g]["test_accuracy_mean"]
                                   for g in hands if g != hand},
            **welch(w["test_accuracies"], h["test_accuracies"]), "bar": BARS.get(dataset),
            "notes": [note.replace(f"{REPO}/", "") for note in notes]}


def table(rows: list[dict]) -> str:
    lines = ["| dataset (report) | searched winner | strongest hand design | winner minus hand design | bar |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        bar = "-" if r["bar"] is None else f"{100 * r['bar']:.1f}%"
        lines.append(f"| {r['dataset_name']} ({r['report']}) | {r['winner']}: {r['winner_mean']:.4f} +- "
                     f"{r['winner_std']:.4f} | {r['hand']}: {r['hand_mean']:.4f} +- {r['hand_std']:.4f} | "
                     f"{100 * r['diff']:+.2f} points (95% CI {100 * r['ci95'][0]:+.2f} to {100 * r['ci95'][1]:+.2f}, "
                     f"p = {r['p_value']:.2g}) | {bar} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="*", help="report folders (default: the headline report of each dataset)")
    p.add_argument("--out", default=OUT, help="the chart (PNG)")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    try:
        rows = [report_row(f) for f in (a.reports or [REPO / f for f in HEADLINE])]
    except (OSError, CompareError, ValueError) as err:
        print(f"overview: {err}", file=sys.stderr)
        return 2
    from .plots import winner_vs_hand_design
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    winner_vs_hand_design(rows, Path(a.out))
    print(table(rows))
    for r in rows:
        for note in r["notes"]:
            print(f"note ({r['report']}): {note}")
    print(f"wrote {a.out}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
