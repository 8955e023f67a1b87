"""Set models retrained in different places beside each other: a report's groups and those of
experiments.results.retrain, when every one was trained and scored under the same protocol.

    python -m experiments.results.compare results/fmnist-sci3mz94/summary.json \
        results/fmnist-sci3mz94/baseline_resnet/summary.json --out results/fmnist-sci3mz94/baseline_resnet/compare.md

It prints every group's test accuracy (mean +- std and per seed) and the reference group (by default the first
file's first group: a report's winner) minus every other, with Welch's t-test and the 95% confidence interval of the
difference. Summaries whose dataset, protocol, epochs, seeds, validation split or smoke flag differ are refused: their
difference would not measure the models. A report adds a baseline to its own runs when they are still on disk (it
reuses finished runs); this is for the case where they are not, e.g. a report kept under results/ without its
checkpoints.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from trial.files import FileFormatError, OutputError, json_text, read_json, write_files

# what must agree for a difference of test accuracies to measure the models; val_size and split_seed fix the images
# a train_val run trains on (reports written before they were recorded lack them: not checked then, and said so)
PROTOCOL_KEYS = ("dataset", "protocol", "epochs", "seeds", "smoke")
SPLIT_KEYS = ("val_size", "split_seed")


class CompareError(ValueError):
    """Summaries that cannot be compared; the message names the file and the key."""


def welch(a: list[float], b: list[float]) -> dict:
    """Difference of mean test accuracies a - b (fractions, e.g. 0.9061) with Welch's t-test (unequal variances,
    scipy.stats.ttest_ind) and the 95% confidence interval of the difference; p and the interval are NaN when either
    side has one value or both have none spread."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    out = {"diff": float(a.mean() - b.mean()), "p_value": float("nan"), "ci95": [float("nan"), float("nan")]}
    if len(a) > 1 and len(b) > 1 and (a.std() > 0 or b.std() > 0):
        test = stats.ttest_ind(a, b, equal_var=False)
        ci = test.confidence_interval(0.95)
        out.update(p_value=float(test.pvalue), ci95=[float(ci.low), float(ci.high)])
    return out


def load_summaries(paths) -> tuple[dict, dict, list[str]]:
    """(protocol, groups, notes) of summary.json files (a report's or a retrain's). groups maps each group name to its
    summary and the file it came from; notes say which split keys could not be checked. Raises FileNotFoundError for
    a missing file and CompareError for a file that is not a summary, a group named twice, a seed listed twice (its
    run would count twice in every statistic) or a protocol that differs."""
    protocol, groups, notes, first = {}, {}, [], None
    for path in map(Path, paths):
        try:
            summary = read_json(path)
            found = summary["groups"]
        except FileNotFoundError:
            raise
        except FileFormatError as err:   # a key given twice, or not JSON
            raise CompareError(str(err)) from None
        except (ValueError, KeyError, TypeError):
            raise CompareError(f"{path}: not a summary.json of experiments.report or experiments.results.retrain "
                               "(no 'groups')") from None
        missing = [k for k in PROTOCOL_KEYS if k not in summary]
        if missing:
            raise CompareError(f"{path}: lacks {', '.join(missing)}; cannot tell its protocol")
        seeds = summary["seeds"]
        if not isinstance(seeds, list) or len(set(map(str, seeds))) != len(seeds):
            raise CompareError(f"{path} lists seeds {seeds}, one of them twice: that run would count as two in the "
                               f"mean, std and Welch's test; retrain with each seed once")
        for key in PROTOCOL_KEYS + SPLIT_KEYS:
            if key not in summary:
                notes.append(f"{path} does not record {key}: not checked")
            elif key not in protocol:
                protocol[key], first = summary[key], first or path
            elif summary[key] != protocol[key]:
                raise CompareError(f"{path} has {key} = {summary[key]!r}, {first} has {protocol[key]!r}: retrain "
                                   f"under one protocol before comparing")
        for name, group in found.items():
            if name in groups:
                raise CompareError(f"group {name} is in {groups[name]['file']} and in {path}: give one of them "
                                   "another name (experiments.results.retrain --name)")
            groups[name] = {**group, "file": str(path)}
    return protocol, groups, notes


def compare(paths, reference: str | None = None) -> dict:
    """The comparison of every group in `paths` (summary.json files) with the reference group (default: the first
    file's first group): {"protocol", "reference", "groups", "comparisons" (name -> welch(reference, name)), "notes"}.
    Raises CompareError for an unknown reference and as load_summaries does."""
    protocol, groups, notes = load_summaries(paths)
    reference = reference or next(iter(groups))
    if reference not in groups:
        raise CompareError(f"no group {reference!r}; the groups are {', '.join(groups)}")
    comparisons = {name: welch(groups[reference]["test_accuracies"], g["test_accuracies"])
                   for name, g in groups.items() if name != reference}
    return {"protocol": protocol, "reference": reference, "groups": groups, "comparisons": comparisons,
            "notes": notes}


def accuracy_cells(group: dict) -> str:
    """A group's test accuracy as two markdown table cells: mean +- std (flagged when seeds diverged) | per seed."""
    flag = f" (DIVERGED: seeds {', '.join(map(str, d))})" if (d := group.get("diverged_seeds")) else ""
    return (f"{group['test_accuracy_mean']:.4f} +- {group['test_accuracy_std']:.4f}{flag} | "
            f"{', '.join(f'{a:.4f}' for a in group['test_accuracies'])}")


def difference_text(c: dict) -> str:
    """A welch() result as text: the difference in fractions of 1 with its 95% CI and p."""
    return f"{c['diff']:+.4f} (95% CI {c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f}, Welch's t-test p = {c['p_value']:.3g})"


def render(result: dict, command: str) -> str:
    """Markdown: the command, the protocol, a table of the groups and one line per comparison."""
    p = result["protocol"]
    lines = [f"Reproduce: `{command}`", "",
             f"Protocol: {p['dataset']}, {p['protocol']}, {p['epochs']} epochs, seeds {p['seeds']}"
             + "".join(f", {k} {p[k]}" for k in SPLIT_KEYS if k in p) + (" (SMOKE: not a result)" if p["smoke"]
                                                                           else "") + ".", "",
             "| model | test accuracy (mean +- std) | runs | parameters | train s/run | from |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, g in result["groups"].items():
        lines.append(f"| {name} | {accuracy_cells(g)} | {g['params']:,} | {g['train_seconds_mean']:.0f} | "
                     f"`{g['file']}` |")
    lines.append("")
    for name, c in result["comparisons"].items():
        lines.append(f"- {result['reference']} minus {name}: {difference_text(c)}.")
    lines += [f"- Note: {n}." for n in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("summaries", nargs="+", help="summary.json files of experiments.report or "
                                               "experiments.results.retrain")
    p.add_argument("--reference", help="the group every other is compared with (default: the first file's first)")
    p.add_argument("--out", help="also write the markdown here, and the result as JSON beside it (.json)")
    args = p.parse_args(argv)
    try:
        result = compare(args.summaries, args.reference)
    except (CompareError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(result, "python -m experiments.results.compare " + " ".join(map(shlex.quote, argv)))
    print(text, end="")
    if args.out:
        out = Path(args.out)
        try:
            write_files({out: text, out.with_suffix(".json"): json_text(result)})
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
