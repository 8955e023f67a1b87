"""Diagnostic of results/bf16-chance (README.md there); run from the repository root with PYTHONPATH=.; not part of the product."""
import json
import sys

from trial import train as T
from trial.config import resolve

base, ds, seed, epochs = sys.argv[1:5]; extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
p = json.load(open(f"baselines/{base}.json")); p.pop("_comment", None)
p.update(dataset=ds, seed=int(seed), epochs=int(epochs), threads=2, tta="none"); p.update(extra)
res = T.train(resolve(p), None, data_dir="../shared/data")
m = res.metrics
print(base, ds[-12:], seed, extra, "val", [round(h.get("default", -1), 4) for h in res.history], "amp", m.get("bf16_autocast"), f"s {m['train_seconds']:.0f}", flush=True)
