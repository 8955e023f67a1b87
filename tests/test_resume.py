"""Hyperband promotions resume: a larger budget continues the smaller run's state instead of starting again."""
from __future__ import annotations

import json

import torch

from trial import resume
from trial.config import resolve
from trial.train import train

TINY = {"dataset": "fmnist", "val_size": 128, "batch_size": 64, "filters": 8, "dense_units": 16, "threads": 1,
        "eval_test": False}


def curve(path):
    return [json.loads(line)["default"] for line in path.read_text().splitlines()]


def test_resumed_run_equals_a_fresh_run_of_the_larger_budget(tiny_root, tmp_path):
    state = tmp_path / "state.pt"
    short = train(resolve(TINY, {"epochs": 2}), resume_from=state).metrics
    assert short["resumed_from_epoch"] == 0 and torch.load(state, weights_only=False)["epoch"] == 2
    reported = []
    longer = train(resolve(TINY, {"epochs": 4}), report=reported.append, resume_from=state,
                   output_dir=tmp_path / "resumed").metrics
    fresh = train(resolve(TINY, {"epochs": 4}), output_dir=tmp_path / "fresh").metrics
    assert longer["resumed_from_epoch"] == 2 and longer["epochs_run"] == 4
    # same RNG stream, same optimiser and plateau state: the continuation is exactly the 4-epoch run
    assert curve(tmp_path / "resumed" / "metrics.jsonl") == curve(tmp_path / "fresh" / "metrics.jsonl")
    assert longer["best_val_accuracy"] == fresh["best_val_accuracy"]
    # the resumed trial re-reports the epochs it inherited, so its learning curve stays whole
    assert [m["epoch"] for m in reported] == [1, 2, 3, 4] and [m.get("resumed") for m in reported] == [1, 1, None, None]


def test_a_corrupt_state_is_a_fresh_start_with_a_warning(tiny_root, tmp_path, capsys):
    state = tmp_path / "state.pt"
    state.write_bytes(b"not a checkpoint")
    result = train(resolve(TINY, {"epochs": 1}), resume_from=state).metrics
    assert result["resumed_from_epoch"] == 0 and result["epochs_run"] == 1
    assert "ignoring" in capsys.readouterr().err
    assert torch.load(state, weights_only=False)["epoch"] == 1   # replaced by a good state


def test_another_config_or_a_larger_saved_budget_does_not_resume(tiny_root, tmp_path, capsys):
    state = tmp_path / "state.pt"
    train(resolve(TINY, {"epochs": 2}), resume_from=state)
    other = train(resolve(TINY, {"epochs": 3, "seed": 1}), resume_from=state).metrics   # same file, other key
    assert other["resumed_from_epoch"] == 0 and "another configuration" in capsys.readouterr().err
    train(resolve(TINY, {"epochs": 3}), resume_from=tmp_path / "b.pt")
    smaller = train(resolve(TINY, {"epochs": 2}), resume_from=tmp_path / "b.pt").metrics
    assert smaller["resumed_from_epoch"] == 0 and "more than this run's" in capsys.readouterr().err


def test_the_key_ignores_budget_and_run_options_only():
    base = resolve(TINY, {"epochs": 1})
    assert resume.resume_key(base) == resume.resume_key(resolve(TINY, {"epochs": 9, "threads": 2,
                                                                        "eval_test": True}))
    for change in ({"seed": 1}, {"learning_rate": 0.01}, {"filters": 16}, {"train_subset": 100}):
        assert resume.resume_key(resolve(TINY, change)) != resume.resume_key(base), change


def test_resume_path_is_per_experiment(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNSEARCH_RESUME_DIR", raising=False)
    monkeypatch.setenv("CNNSEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("NNI_EXP_ID", "abc123")
    cfg = resolve(TINY)
    assert resume.resume_path(cfg) == tmp_path / "resume" / "abc123" / f"{resume.resume_key(cfg)}.pt"
    monkeypatch.setenv("CNNSEARCH_RESUME_DIR", str(tmp_path / "shared"))
    assert resume.resume_path(cfg).parent == tmp_path / "shared"
