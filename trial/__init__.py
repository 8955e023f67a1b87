"""The trial harness: `python -m trial` trains one CNN from a config and reports to NNI (or runs alone in debug mode).

Modules, one concept each: `config` (the TrialConfig dataclass and the parameter rules), `data` (the dataset table,
loaders, cache, splits, normalisation), `augment` (batched tensor augmentation), `model` (the CNN builder), `optim`
(optimizers, learning-rate schedules, losses), `train` (`train(config) -> TrainResult`, never imports nni), `resume`
(the state a multi-fidelity run resumes from), `search_space` (draws from an NNI search space without NNI),
`adapter` (the NNI adapter and debug mode, `python -m trial`).
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent   # the repository root: data/ and ../shared/data are looked for beside it
