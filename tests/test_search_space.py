"""Search-space validation accepts exactly what NNI 3.0's TPE and Random tuners run with (asked in-process, their own
code), and the field cases (../shared/field_cases/c01, c02, c13) behave as users expect through `python -m trial`.

    .venv/bin/pytest tests/test_search_space.py -q
"""
from __future__ import annotations

import json
import logging
import random

import pytest

from tests.conftest import FIELD_CASES, REPO, needs_field_cases
from tests.test_trial_cli import call_trial
from trial.search_space import SearchSpaceError, sample, validate

# name -> (space, accepted?). Refused: what NNI's validation rejects or its tuners crash on; accepted: what both take,
# and the choice of plain dicts (field case c01) that the validation logs against but the tuners draw as values.
SPACES = {
    "choice of plain dicts": (True, {"w": {"_type": "choice", "_value": [{"filters_1": 16}, {"filters_1": 32}]}}),
    "loguniform written as logs": (False, {"lr": {"_type": "loguniform", "_value": [-9.2, -4.6]}}),
    "reversed uniform": (False, {"lr": {"_type": "uniform", "_value": [0.001, 0.00001]}}),
    "reversed qloguniform": (False, {"lr": {"_type": "qloguniform", "_value": [1.0, 0.1, 0.1]}}),
    "empty choice": (False, {"a": {"_type": "choice", "_value": []}}),
    "q of zero": (False, {"a": {"_type": "quniform", "_value": [0, 1, 0]}}),
    "randint with float bounds": (False, {"a": {"_type": "randint", "_value": [1.5, 4]}}),
    "equal bounds": (False, {"a": {"_type": "uniform", "_value": [1, 1]}}),
    "choice mixing a value and a dict": (False, {"a": {"_type": "choice", "_value": [1, {"x": 2}]}}),
    "negative sigma": (False, {"a": {"_type": "normal", "_value": [0, -1]}}),
    "unknown type": (False, {"a": {"_type": "gaussian", "_value": [0, 1]}}),
    "nested two levels": (True, {"a": {"_type": "choice", "_value": [{"_name": "p", "b": {"_type": "choice", "_value": [
        {"_name": "q", "x": {"_type": "uniform", "_value": [0, 1]}}]}}]}}),
    "nested option with a bad range": (False, {"a": {"_type": "choice", "_value": [
        {"_name": "p", "x": {"_type": "uniform", "_value": [1, 0]}}, {"_name": "q"}]}}),
    "value not a list": (False, {"a": {"_type": "choice", "_value": 3}}),
    "spec not a dict": (False, {"a": 3}),
    "negative q": (True, {"a": {"_type": "qlognormal", "_value": [0, 1, -1]}}),
    "choice of lists": (False, {"a": {"_type": "choice", "_value": [[1, 2], [3]]}}),
    "choice of dicts with and without _name": (False, {"a": {"_type": "choice", "_value": [{"_name": "p"}, {"x": 1}]}}),
}


def _tuners_accept(space: dict) -> bool:
    """Whether NNI 3.0's TPE and Random tuners take the space and generate parameters (both, or neither)."""
    from nni.algorithms.hpo.random_tuner import RandomTuner
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    verdicts = []
    for tuner in (TpeTuner(optimize_mode="maximize"), RandomTuner(seed=0)):
        logging.disable(logging.CRITICAL)      # NNI's validation logs what it dislikes, then carries on
        try:
            tuner.update_search_space(space)
            for i in range(3):
                tuner.generate_parameters(i)
            verdicts.append(True)
        except Exception as err:   # noqa: BLE001
            verdicts.append(type(err).__name__ == "NoMoreTrialError")   # a small space drawn out: not a crash
        finally:
            logging.disable(logging.NOTSET)
    assert verdicts[0] == verdicts[1], f"TPE and Random disagree on {space}"
    return verdicts[0]


@pytest.mark.parametrize("name", SPACES)
def test_validation_refuses_what_nni_rejects_and_never_passes_a_crash(name):
    accepted, space = SPACES[name]
    try:
        validate(space)
        ours = True
    except SearchSpaceError as err:
        assert "\n" not in str(err) and "a" in str(err)
        ours = False
    assert ours == accepted, f"{name}: validate says {ours}"
    if ours:
        assert _tuners_accept(space), f"{name}: accepted, but NNI's tuners crash on it"


def test_the_shipped_spaces_validate_and_draw_like_nni():
    for path in sorted((REPO / "search_spaces").glob("*.json")):
        space = validate(json.loads(path.read_text()))
        assert _tuners_accept(space), path.name
        draws = [sample(space, random.Random(seed)) for seed in range(20)]
        assert len({json.dumps(d, sort_keys=True) for d in draws}) > 1, path.name


def test_a_draw_follows_nni_semantics():
    space = {"n": {"_type": "randint", "_value": [2, 4]}, "lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
             "q": {"_type": "quniform", "_value": [0, 1, 0.25]},
             "arch": {"_type": "choice", "_value": [{"_name": "a", "k": {"_type": "choice", "_value": [3, 5]}}]}}
    draws = [sample(space, random.Random(seed)) for seed in range(200)]
    assert {d["n"] for d in draws} == {2, 3}                        # upper bound exclusive, as in NNI
    assert all(1e-4 <= d["lr"] <= 1e-2 for d in draws)
    assert {d["q"] for d in draws} <= {0, 0.25, 0.5, 0.75, 1.0}
    assert all(d["arch"]["_name"] == "a" and d["arch"]["k"] in (3, 5) for d in draws)
    assert sample(space, random.Random(7)) == sample(space, random.Random(7))




@needs_field_cases
def test_field_case_choice_of_plain_dicts_trains(tiny_root, tmp_path):
    """c01: NNI's tuners draw the plain dicts as values and the trials run; debug mode does the same."""
    out = tmp_path / "out"
    proc = call_trial("--sample", FIELD_CASES / "c01_choice_dicts_no_name.json", "--smoke", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    sampled = json.loads((out / "trial.json").read_text())["sampled_params"]
    assert {config["filters_1"], config["filters_2"]} == set(sampled["widths"].values())


@needs_field_cases
@pytest.mark.parametrize("case,words", [("c02_loguniform_log_bounds", ("learning_rate", "0 < low < high")),
                                        ("c13_reversed_uniform", ("learning_rate", "high > low"))])
def test_field_case_space_nni_rejects_is_refused_in_one_line(tiny_root, tmp_path, case, words):
    proc = call_trial("--sample", FIELD_CASES / f"{case}.json", "--smoke", "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr
    assert not (tmp_path / "out").exists()


def test_field_case_unsampled_entry_from_a_choice_without_name_is_named():
    """c12: NNI 3.0 sends a trial the unsampled branch of a choice whose option lacks a '_name'; the trial says so in
    one line naming the entry and the fix, not "set twice"."""
    from trial.config import ConfigError, resolve
    sent = {"third_block": {"conv_layers": {"_type": "choice", "_value": [3]},
                            "filters_3": {"_type": "choice", "_value": [64, 128]}}}
    with pytest.raises(ConfigError, match=r"unsampled search-space entry for 'conv_layers'.*needs a '_name'"):
        resolve({"dataset": "mnist"}, sent)
