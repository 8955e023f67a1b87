"""How much does test-time augmentation add to a trained model? Each checkpoint scored on the test split under every
TTA mode of trial.inference (none, mirror, mirror + translate, translate), from the same weights.

    python -m experiments.studies.tta reports/fm-probe/a/seed0 reports/fm-probe/b/seed0 --data-dir ../shared/data
    python -m experiments.studies.tta runs/x/seed0/best.pt --modes none mirror --json tta.json
    python -m experiments.studies.tta runs/x/seed0 --smoke                     # the first 256 test images only

A checkpoint is a run folder holding best.pt or the best.pt itself (trial.train.save_run writes it: the weights and
their resolved config, loaded with experiments.results.evaluate.load_checkpoint). TTA changes only how a trained model
is scored, so one training run answers for every mode; it is the `tta` key a search can choose. The test split is
read: score final models only, never models a search is still choosing between (their split is validation).
Found with it (Fashion-MNIST, the airbench design; results/fmnist-width-probes/README.md): mirror + translate added
0.18 points over the mirror alone at half and at 0.75 width.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from trial.inference import TTA


def checkpoint_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


def score(path: str | Path, modes=tuple(TTA), data_dir: str | None = None, limit: int = 0) -> dict:
    """{"checkpoint", "dataset", "test_images", "accuracy": {mode: test accuracy}} for one checkpoint (see the module
    docstring); `limit` > 0 scores the first `limit` test images only. Raises OSError for a missing checkpoint and
    KeyError naming the accepted modes for an unknown one."""
    from experiments.results.evaluate import load_checkpoint
    from trial import data as data_mod
    from trial.inference import infer
    for mode in modes:
        if mode not in TTA:
            raise KeyError(f"unknown TTA mode {mode!r}; accepted: {', '.join(TTA)}")
    model, cfg = load_checkpoint(checkpoint_path(path))
    d = data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, data_dir)
    x, y = (d.test_x[:limit], d.test_y[:limit]) if limit else (d.test_x, d.test_y)
    accuracy = {m: float((infer(model, x, tta=m).argmax(1) == y).float().mean()) for m in modes}
    return {"checkpoint": str(checkpoint_path(path)), "dataset": cfg.dataset, "test_images": len(y),
            "accuracy": accuracy}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="run folders holding best.pt, or best.pt files")
    p.add_argument("--modes", nargs="+", default=list(TTA), help=f"of {', '.join(TTA)}")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="score the first N test images only")
    p.add_argument("--smoke", action="store_true", help="--limit 256")
    p.add_argument("--json", help="write a list of the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = []
    for path in a.checkpoints:
        try:
            r = score(path, a.modes, a.data_dir, 256 if a.smoke else a.limit)
        except KeyError as err:
            p.error(err.args[0])
        results.append(r)
        base = r["accuracy"].get("none")
        parts = [f"{m} {acc:.4f}" + (f" ({100 * (acc - base):+.2f} points)" if base is not None and m != "none"
                                     else "") for m, acc in r["accuracy"].items()]
        print(f"{r['checkpoint']} ({r['dataset']}, {r['test_images']} test images): {', '.join(parts)}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
