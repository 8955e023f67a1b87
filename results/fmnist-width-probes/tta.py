import sys

import torch

from experiments.results.evaluate import load_checkpoint, predict_proba
from trial import data as data_mod

torch.set_num_threads(2)
for d in sys.argv[1:]:
    model, cfg = load_checkpoint(d + "/best.pt")
    data = data_mod.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), 0, "../shared/data")
    y = data.test_y.numpy()
    out = {t: float((predict_proba(model, data.test_x, tta=t).argmax(1) == y).mean()) for t in ("none", "mirror", "mirror_translate")}
    print(d, out, flush=True)
