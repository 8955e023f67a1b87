"""Draw configurations from an NNI search-space JSON without NNI: for `python -m trial --sample` and the tests.

Supports NNI's types: choice (nested `_name` choices included), randint (upper bound exclusive, as in NNI), uniform,
quniform, loguniform, qloguniform, normal, qnormal, lognormal, qlognormal. A draw has NNI's shape: a nested choice
comes back as a dict with its `_name`, which `trial.config.flatten_params` hoists.
"""
from __future__ import annotations

import json
import math
import random
from typing import Any

TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal", "lognormal",
         "qlognormal")


class SearchSpaceError(ValueError):
    pass


def _q(value: float, q: float, low: float | None = None, high: float | None = None) -> float:
    value = round(value / q) * q
    if low is not None:
        value = min(max(value, low), high)
    return value


def _draw(name: str, spec: Any, rng: random.Random) -> Any:
    if not isinstance(spec, dict) or "_type" not in spec or "_value" not in spec:
        raise SearchSpaceError(f"search-space entry {name!r} must be {{'_type': ..., '_value': ...}}, got {spec!r}")
    kind, v = spec["_type"], spec["_value"]
    if kind not in TYPES:
        raise SearchSpaceError(f"search-space entry {name!r} has unknown _type {kind!r}; valid: {', '.join(TYPES)}")
    if kind == "choice":
        option = rng.choice(v)
        if isinstance(option, dict):
            if "_name" not in option:
                raise SearchSpaceError(f"nested choice in {name!r} needs a '_name' in every option: {option!r}")
            return {"_name": option["_name"], **sample({k: s for k, s in option.items() if k != "_name"}, rng)}
        return option
    if kind == "randint":
        return rng.randrange(int(v[0]), int(v[1]))
    if kind == "uniform":
        return rng.uniform(v[0], v[1])
    if kind == "quniform":
        return _q(rng.uniform(v[0], v[1]), v[2], v[0], v[1])
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(v[0]), math.log(v[1])))
    if kind == "qloguniform":
        return _q(math.exp(rng.uniform(math.log(v[0]), math.log(v[1]))), v[2], v[0], v[1])
    if kind == "normal":
        return rng.gauss(v[0], v[1])
    if kind == "qnormal":
        return _q(rng.gauss(v[0], v[1]), v[2])
    if kind == "lognormal":
        return math.exp(rng.gauss(v[0], v[1]))
    return _q(math.exp(rng.gauss(v[0], v[1])), v[2])


def sample(space: dict, rng: random.Random) -> dict:
    return {name: _draw(name, spec, rng) for name, spec in space.items()}


def load_space(path: str) -> dict:
    with open(path) as fh:
        try:
            space = json.load(fh)
        except json.JSONDecodeError as err:
            raise SearchSpaceError(f"search space {path} is not valid JSON: {err}") from None
    if not isinstance(space, dict):
        raise SearchSpaceError(f"search space {path} must be a JSON object of parameter specs")
    return space


def sample_file(path: str, seed: int = 0) -> dict:
    return sample(load_space(path), random.Random(seed))
