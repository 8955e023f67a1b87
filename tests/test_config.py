"""Configuration: precedence of the parameter sources, rejection of unknown keys and bad values, NNI's shapes.

    .venv/bin/pytest tests/test_config.py -q
"""
from __future__ import annotations

import json

import pytest

from trial import adapter, config
from trial.config import ConfigError, resolve
from trial.train import TrainResult


def run_main(monkeypatch, tmp_path, argv):
    """`python -m trial` in-process with training replaced: returns the TrialConfig that would have been trained."""
    code, cfg = main_without_training(monkeypatch, tmp_path, argv)
    assert code == 0
    return cfg


def main_without_training(monkeypatch, tmp_path, argv):
    """`python -m trial ARGV` in-process with training replaced: its exit code and the TrialConfig it would have
    trained (None when refused before training)."""
    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        return TrainResult(None, {"default": 0.5, "best_val_accuracy": 0.5, "best_epoch": 1, "epochs_run": 1,
                                  "params": 10, "train_seconds": 0.1, "device": "cpu", "diverged": False}, [], cfg)
    monkeypatch.setattr(adapter, "train", fake_train)
    monkeypatch.delenv("NNI_PLATFORM", raising=False)
    code = adapter.main([*map(str, argv), "--output-dir", str(tmp_path / "out")])
    return code, seen.get("cfg")


def test_precedence_defaults_file_sampled_smoke_cli(monkeypatch, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"filters": 8, "kernel": 5, "dropout": 0.1, "epochs": 7, "batch_size": 16,
                                  "train_subset": 3000}))
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"kernel": {"_type": "choice", "_value": [7]},
                                 "dropout": {"_type": "choice", "_value": [0.2]},
                                 "epochs": {"_type": "choice", "_value": [9]},
                                 "train_subset": {"_type": "choice", "_value": [2000]}}))
    cfg = run_main(monkeypatch, tmp_path, ["--params", str(params), "--sample", str(space), "--smoke",
                                           "--dropout", "0.3", "--val_size", "100"])
    default = config.TrialConfig()
    assert cfg.learning_rate == default.learning_rate       # defaults
    assert cfg.filters == 8 and cfg.batch_size == 16        # file over defaults
    assert cfg.kernel == 7                                  # sampled over file
    assert cfg.epochs == 1 and cfg.train_subset == 512      # smoke over sampled
    assert cfg.dropout == 0.3 and cfg.val_size == 100       # command line over everything
    assert isinstance(cfg.val_size, int) and isinstance(cfg.dropout, float)
    saved = json.loads((tmp_path / "out" / "trial.json").read_text())
    assert saved["sampled_params"] == {"kernel": 7, "dropout": 0.2, "epochs": 9, "train_subset": 2000}


def test_cli_flags_accept_dashes_and_booleans(monkeypatch, tmp_path):
    cfg = run_main(monkeypatch, tmp_path, ["--batch-norm", "true", "--learning-rate", "0.01", "--augment", "no"])
    assert cfg.batch_norm is True and cfg.learning_rate == 0.01 and cfg.augment is False


def test_resolve_later_layers_win():
    cfg = resolve({"filters": 8, "dropout": 0.1}, None, {}, {"filters": 16})
    assert cfg.filters == 16 and cfg.dropout == 0.1 and cfg.kernel == config.TrialConfig().kernel


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        resolve({"filterz": 3})
    message = str(info.value)
    assert "'filterz'" in message
    assert all(name in message for name in config.FIELDS)


@pytest.mark.parametrize("params,key", [
    ({"filters": "many"}, "filters"),                          # wrong type
    ({"filters": 3.5}, "filters"),                             # not a whole number
    ({"batch_size": True}, "batch_size"),                      # a bool is not an int
    ({"batch_norm": "maybe"}, "batch_norm"),
    ({"batch_norm": 2}, "batch_norm"),
    ({"dataset": 5}, "dataset"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"learning_rate": [0.1]}, "learning_rate"),
    ({"dropout": 0.99}, "dropout"),                            # out of range
    ({"conv_layers": 7}, "conv_layers"),
    ({"conv_layers": 0}, "conv_layers"),
    ({"epochs": 0}, "epochs"),
    ({"momentum": -0.1}, "momentum"),
    ({"activation": "swish"}, "activation"),                   # unknown choice
    ({"optimizer": "Adamax"}, "optimizer"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"dataset": "svhn"}, "dataset"),
    ({"kernel": 4}, "kernel"),                                 # even kernel
    ({"kernel_2": 4}, "kernel_2"),
    ({"conv_layers": 2, "filters_3": 16}, "filters_3"),        # a block that does not exist
    ({"conv_layers": 3, "kernel_5": 3}, "kernel_5"),
    ({"loss": "mse", "label_smoothing": 0.1}, "label_smoothing"),
])
def test_bad_values_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        resolve(params)


@pytest.mark.parametrize("field", sorted(config.CHOICES))
def test_unknown_choice_lists_valid_values(field):
    table = config.CHOICES[field]
    with pytest.raises(ConfigError) as info:
        resolve({field: "nonesuch"})
    assert all(name in str(info.value) for name in table)


def test_nni_float_integers_are_accepted():
    cfg = resolve({"filters": 64.0, "conv_layers": 3.0, "batch_size": "128", "dense_units": 0.0})
    assert (cfg.filters, cfg.conv_layers, cfg.batch_size, cfg.dense_units) == (64, 3, 128, 0)
    assert all(type(v) is int for v in (cfg.filters, cfg.conv_layers, cfg.batch_size, cfg.dense_units))
    assert resolve({"learning_rate": 1}).learning_rate == 1.0 and resolve({"batch_norm": 1}).batch_norm is True


def test_nested_choice_under_a_config_key_sets_it():
    cfg = resolve({"optimizer": {"_name": "sgd", "learning_rate": 0.1}})
    assert cfg.optimizer == "sgd" and cfg.learning_rate == 0.1
    cfg = resolve({"conv_layers": {"_name": "3", "filters_3": 16, "kernel_3": 5}})
    assert cfg.conv_layers == 3 and cfg.channels()[2] == 16 and cfg.kernels()[2] == 5


def test_nested_choice_under_another_key_is_hoisted():
    cfg = resolve({"arch": {"_name": "x", "filters_1": 16, "inner": {"_name": "y", "kernel_1": 5}}})
    assert cfg.filters_1 == 16 and cfg.kernel_1 == 5
    assert config.flatten_params({"arch": {"_name": "x", "filters_1": 16}}) == {"filters_1": 16}


def test_nested_choice_cannot_set_a_key_twice():
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve({"optimizer": {"_name": "sgd", "learning_rate": 0.1}, "learning_rate": 0.2})


def test_trial_budget_sets_epochs():
    assert config.normalize({"TRIAL_BUDGET": 3}) == {"epochs": 3}
    assert resolve({"epochs": 10}, {"TRIAL_BUDGET": 4.0, "lr": 0.01}).epochs == 4


def test_an_alias_and_its_key_in_one_source_are_ambiguous():
    with pytest.raises(ConfigError, match="epochs"):
        resolve({"epochs": 3, "TRIAL_BUDGET": 9})


def test_params_digest_ignores_key_order():
    a = {"filters": 32, "optimizer": {"_name": "sgd", "learning_rate": 0.1, "momentum": 0.9}, "seed": 1}
    b = {"seed": 1, "optimizer": {"momentum": 0.9, "learning_rate": 0.1, "_name": "sgd"}, "filters": 32}
    assert config.params_digest(a) == config.params_digest(b)
    assert config.params_digest(a) != config.params_digest({**a, "seed": 2})
    assert resolve(a).digest() == resolve(b).digest()


def test_params_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{filters: 3")
    with pytest.raises(ConfigError, match="bad.json"):
        config.load_params_file(str(bad))
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        config.load_params_file(str(listed))
    yml = tmp_path / "p.yaml"
    yml.write_text("filters: 8\nbatch_norm: true\n")
    assert resolve(config.load_params_file(str(yml))).filters == 8


@pytest.mark.parametrize("params,words", [
    ({"dataset": "mnist", "conv_layers": 5}, ("'kernel' = 3", "1x1 feature map block 5")),
    ({"dataset": "mnist", "conv_layers": 4, "kernel_4": 7}, ("'kernel_4' = 7", "3x3 feature map", "<= 5")),
    ({"dataset": "cifar10", "conv_layers": 6, "kernel": 5}, ("'kernel' = 5", "2x2 feature map block 5")),
    ({"family": "residual", "kernel": 5}, ("kernel", "plain family only")),
    ({"family": "airbench", "batch_norm": True, "dense_units": 64}, ("batch_norm, dense_units", "'airbench'")),
    ({"dataset": "mnist", "tta": "mirror_translate"}, ("tta 'mirror_translate'", "mnist's classes")),
    ({"dataset": "mnist", "augment": True, "augmentation": "crop_flip"}, ("augmentation 'crop_flip'", "'crop'")),
])
def test_parameters_that_cannot_work_are_refused_in_one_line(params, words):
    with pytest.raises(ConfigError) as info:
        resolve(params)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words), str(info.value)


def test_kernels_that_fit_and_plain_keys_at_their_defaults_pass():
    assert resolve({"dataset": "mnist", "conv_layers": 4, "kernel_4": 5}).kernels()[3] == 5    # 3x3 map: 5 fits
    assert resolve({"dataset": "mnist", "conv_layers": 5, "kernel_5": 1}).conv_layers == 5
    assert resolve({"family": "residual", "kernel": 3, "batch_norm": False}).family == "residual"   # the defaults
