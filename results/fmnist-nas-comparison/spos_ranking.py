"""Does the gated RandomOneShot supernet rank architectures as their own training does? The one-shot search
(spos_gated_search.log) scored 12 candidates on its trained supernet (validation accuracy with the supernet's
weights, BatchNorm re-estimated); this trains each of the same 12 (experiments.nas.oneshot draws them with
trial.nas_space.sample_arch from random.Random(0)) from scratch at the multi-trial search's fidelity (2 epochs on
10,000 images, DARTS' recipe, one thread, gated cells as searched, seed 0) and compares the two rankings
(Kendall's tau, scipy).

    PYTHONPATH=. python results/fmnist-nas-comparison/spos_ranking.py train 0 2 ranking-0.jsonl &   # worker 0 of 2
    PYTHONPATH=. python results/fmnist-nas-comparison/spos_ranking.py train 1 2 ranking-1.jsonl
    PYTHONPATH=. python results/fmnist-nas-comparison/spos_ranking.py tau spos_gated_search.log ranking-*.jsonl
"""
import json
import random
import re
import sys
import time

CANDIDATES = 12


def candidates():
    from trial.nas_space import sample_arch
    rng = random.Random(0)
    return [sample_arch(rng) for _ in range(CANDIDATES)]


def train_worker(worker: int, workers: int, out: str) -> None:
    import torch
    from trial.config import load_params_file, resolve
    from trial.train import train
    torch.set_num_threads(1)
    recipe = load_params_file("recipes/nas_darts.json")
    for i, arch in enumerate(candidates()):
        if i % workers != worker:
            continue
        cfg = resolve(recipe, {"dataset": "fmnist", "family": "nas", "nas_arch": arch, "nas_cell_gate": True,
                               "epochs": 2, "train_subset": 10000, "threads": 1, "seed": 0, "eval_test": False})
        start = time.perf_counter()
        result = train(cfg, data_dir="../shared/data")
        row = {"candidate": i + 1, "val_accuracy": result.metrics["default"], "seconds": time.perf_counter() - start}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def tau(log: str, outs: list[str]) -> None:
    from scipy import stats
    supernet = {int(m[1]): float(m[2]) for m in re.finditer(r"candidate (\d+)/\d+: validation accuracy ([0-9.]+)",
                                                             open(log).read())}
    trained = {}
    for path in outs:
        for line in open(path):
            row = json.loads(line)
            trained[row["candidate"]] = row
    ids = sorted(set(supernet) & set(trained))
    print("candidate  supernet  trained (2 epochs, 10k)  seconds")
    for i in ids:
        print(f"{i:9d}  {supernet[i]:.4f}    {trained[i]['val_accuracy']:.4f}                  "
              f"{trained[i]['seconds']:.0f}")
    t = stats.kendalltau([supernet[i] for i in ids], [trained[i]["val_accuracy"] for i in ids])
    best_supernet = max(ids, key=lambda i: supernet[i])
    rank = sorted(ids, key=lambda i: -trained[i]["val_accuracy"]).index(best_supernet) + 1
    print(f"Kendall tau {t.statistic:+.3f} (p = {t.pvalue:.2f}, {len(ids)} candidates); the supernet's choice "
          f"(candidate {best_supernet}) ranks {rank} of {len(ids)} when trained")


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        tau(sys.argv[2], sys.argv[3:])
