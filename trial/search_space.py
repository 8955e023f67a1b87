"""Search spaces (NNI's JSON format): one validation and one sampler for debug mode, the pre-flight check and tests.

`validate` refuses, with one line, what NNI 3.0 rejects and what its tuners crash on, and accepts the rest. Where nni
is installed NNI's own code decides: its validation (`nni.common.hpo_utils.validate_search_space`) judges every
parameter, then every parameter is parsed (`format_search_space`), drawn (`random_tuner.suggest`) and deformatted
(`deformat_parameters`) as the TPE and Random tuners do; a `q` of 0, which the validation lets through, dies there.
One rule of NNI's validation is not followed, because NNI's tuners do not follow it either: a `choice` whose options
are plain dicts without `_name` (the validation logs an error, then TPE and Random draw the dicts as values and the
trials run; `trial.config.flatten_params` hoists their keys). Tuner-specific limits (Evolution refuses such choices)
are the pre-flight check's: `python -m experiments.check` asks the configured tuner itself for parameters.

`sample` draws as NNI's Random tuner does (`format_search_space`, `random_tuner.suggest`, `deformat_parameters`):
a draw has NNI's shape, a nested choice comes back as a dict with its `_name`, which `trial.config.flatten_params`
hoists. Without nni (a GPU box running the harness in debug mode) a small fallback draws from the same types with
NNI's semantics (randint's upper bound exclusive; loguniform bounds are values, not logarithms).
"""
from __future__ import annotations

import math
import random
from typing import Any

from .files import FileFormatError, closest, read_json

TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal", "lognormal",
         "qlognormal")


class SearchSpaceError(ValueError):
    """A search space NNI would reject or its tuners would crash on; the message is one line naming the entry."""


def _nni():
    try:
        from nni.common.hpo_utils import formatting, validation
    except ImportError:
        return None
    return validation, formatting


def _is_nested(values: list) -> bool:
    # the tuners' own test (nni.common.hpo_utils.formatting._is_nested_choices): every option a dict with a _name
    return bool(values) and all(isinstance(v, dict) and "_name" in v for v in values)


def _check_entry(path: str, spec: Any) -> None:
    """One parameter: refused when NNI's tuners cannot draw it (tried with their own code where nni is installed);
    the message is NNI's validation's where it has one, else the tuners' own error."""
    if not isinstance(spec, dict) or "_type" not in spec or "_value" not in spec:
        raise SearchSpaceError(f"search-space entry {path!r} must be {{\"_type\": ..., \"_value\": [...]}}, "
                               f"got {spec!r}")
    kind, values = spec["_type"], spec["_value"]
    if kind not in TYPES:
        raise SearchSpaceError(f"search-space entry {path!r} has unknown _type {kind!r}{closest(kind, TYPES)}; "
                               f"valid: {', '.join(TYPES)}")
    if not isinstance(values, list):
        raise SearchSpaceError(f"search-space entry {path!r}: _value must be a list, got {values!r}")
    if kind == "choice":
        if not values:
            raise SearchSpaceError(f"search-space entry {path!r}: choice needs at least one option")
        if _is_nested(values):
            for option in values:
                _check_space(option, f"{path}[{option['_name']}]")
        elif not (all(isinstance(v, (int, float, str)) for v in values)
                  or all(isinstance(v, dict) and "_name" not in v for v in values)):
            # NNI's validation rule, but for options that are all plain dicts: the tuners draw those as values
            raise SearchSpaceError(f"search-space entry {path!r}: choice options must be all numbers/strings, all "
                                   f"nested choices (dicts with a '_name'), or all dicts of fixed parameters; got "
                                   f"{values!r}")
        return
    nni = _nni()
    hint = (f"; {kind} needs 0 < low < high, written as the values themselves (e.g. [1e-4, 1e-2]), not their "
            f"logarithms") if kind in ("loguniform", "qloguniform") else ""
    try:
        if nni:
            nni[0].validate_search_space({path: spec}, raise_exception=True)
        else:
            _fallback_rules(path, kind, values)
    except ValueError as rule:
        raise SearchSpaceError(str(rule).replace("\n", " ").removeprefix("search space ") + hint) from None
    try:
        _try_draw(path, spec)
    except Exception as err:   # noqa: BLE001 - whatever the tuners' code raises is a space they die on
        raise SearchSpaceError(f'"{path}" ({kind}): NNI\'s tuners fail to draw it: {type(err).__name__}: {err}'
                               + hint) from None


def _try_draw(path: str, spec: dict) -> None:
    """Draw the parameter as the tuners do: NNI's parser, Random's draw, NNI's deformatting (TPE differs from Random
    only in where it draws inside the same parsed range). Raises whatever they raise."""
    nni = _nni()
    if not nni:
        return
    import numpy as np
    from nni.algorithms.hpo.random_tuner import suggest
    formatted = nni[1].format_search_space({path: spec})
    rng = np.random.default_rng(0)
    for _ in range(3):
        nni[1].deformat_parameters(suggest(rng, formatted), formatted)


def _fallback_rules(path: str, kind: str, values: list) -> None:
    # nni.common.hpo_utils.validation.validate_search_space's rules for one parameter, for machines without nni,
    # plus the q of 0 that its tuners divide by
    want = 3 if kind.startswith("q") else 2
    number = (int,) if kind == "randint" else (int, float)
    if len(values) != want or not all(isinstance(v, number) for v in values):
        raise ValueError(f'search space "{path}" ({kind}) must have {want} {number[-1].__name__} values : {values}')
    if kind.startswith("q") and values[2] == 0:
        raise ValueError(f'search space "{path}" ({kind}) must have q != 0 : {values}')
    if "normal" in kind:
        if values[1] <= 0:
            raise ValueError(f'search space "{path}" ({kind}) must have sigma > 0 : {values}')
    elif values[0] >= values[1]:
        raise ValueError(f'search space "{path}" ({kind}) must have high > low : {values}')
    elif "log" in kind and values[0] <= 0:
        raise ValueError(f'search space "{path}" ({kind}) must have low > 0 : {values}')


def _check_space(space: Any, where: str = "") -> None:
    if not isinstance(space, dict):
        raise SearchSpaceError(f"search space{' ' + where if where else ''} must be a JSON object of parameter "
                               f"specs, got {type(space).__name__}")
    for name, spec in space.items():
        if name == "_name":
            continue
        _check_entry(f"{where}.{name}" if where else name, spec)


def validate(space: Any) -> dict:
    """Check a search space (the parsed JSON) as NNI 3.0's tuners take it; returns it. Raises SearchSpaceError with
    one line naming the entry and the rule (e.g. `"learning_rate" (uniform) must have high > low`)."""
    _check_space(space)
    nni = _nni()
    if nni:
        try:
            nni[1].format_search_space(space)     # what every tuner does first with the space
        except Exception as err:   # noqa: BLE001 - whatever the tuners' parser raises is a space they die on
            raise SearchSpaceError(f"NNI's tuners cannot parse this search space: {type(err).__name__}: {err}") \
                from None
    return space


def _fallback_draw(spec: dict, rng: random.Random) -> Any:
    kind, v = spec["_type"], spec["_value"]
    if kind == "choice":
        option = rng.choice(v)
        if _is_nested(v):
            return {"_name": option["_name"], **_fallback_sample({k: s for k, s in option.items() if k != "_name"},
                                                                 rng)}
        return option
    if kind == "randint":
        return rng.randrange(int(v[0]), int(v[1]))
    if "normal" in kind:
        x = rng.gauss(v[0], v[1])
    else:
        low, high = (math.log(v[0]), math.log(v[1])) if "log" in kind else (v[0], v[1])
        x = rng.uniform(low, high)
    if "log" in kind:
        x = math.exp(x)
    if kind.startswith("q"):
        x = round(x / v[2]) * v[2]
        if "normal" not in kind:
            x = min(max(x, v[0]), v[1])
    return x


def _fallback_sample(space: dict, rng: random.Random) -> dict:
    return {name: _fallback_draw(spec, rng) for name, spec in space.items()}


def sample(space: dict, rng: random.Random) -> dict:
    """One configuration drawn from a validated space, as NNI's Random tuner draws it (NNI's own code when nni is
    installed), seeded by `rng`. Returns NNI's parameter shape (nested choices as dicts with their `_name`)."""
    nni = _nni()
    if not nni:
        return _fallback_sample(space, rng)
    import numpy as np
    from nni.algorithms.hpo.random_tuner import suggest
    formatted = nni[1].format_search_space(space)
    return nni[1].deformat_parameters(suggest(np.random.default_rng(rng.getrandbits(63)), formatted), formatted)


def _as_yaml(path: str):
    """The file read as YAML, as NNI's ExperimentConfig reads a search-space file that json.loads refuses; None when
    that fails too (the JSON error is then the one to show)."""
    from trial.files import loads_yaml, read_text
    try:
        return loads_yaml(read_text(path), str(path))
    except (OSError, FileFormatError):
        return None


def load_space(path: str) -> dict:
    """Read and validate a search-space JSON file. Raises SearchSpaceError (one line: the file and what is wrong)."""
    try:
        space = read_json(path)   # a byte-order mark and CRLF ends accepted, a key given twice refused
    except FileFormatError as err:
        space = _as_yaml(path)    # NNI reads a space that is not JSON as YAML: trailing commas, # comments
        if not isinstance(space, dict):
            raise SearchSpaceError(f"search space {err}") from None
    except OSError as err:
        raise SearchSpaceError(f"search space {path} cannot be read: {err.strerror}") from None
    try:
        return validate(space)
    except SearchSpaceError as err:
        raise SearchSpaceError(f"search space {path}: {err}") from None


def sample_file(path: str, seed: int = 0) -> dict:
    return sample(load_space(path), random.Random(seed))
