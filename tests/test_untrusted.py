"""Untrusted files: nothing a data file, params file, resume state or checkpoint says is executed, and a model exported
to share carries no paths of the machine that built it. Each crafted file really tries to run code (it would create
a marker file); the test asserts the refusal and that the marker is absent.

    .venv/bin/pytest tests/test_untrusted.py -q
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from tests import tiny_data
from trial import REPO, data
from trial.config import ConfigError, load_params_file, resolve
from trial.data import DatasetError


class Payload:
    """Unpickling this calls os.system: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_python_batch_runs_no_code(isolated_env, tmp_path):
    folder = tiny_data.write_cifar_py(isolated_env / "data", per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0] * 10}))
    with pytest.raises(DatasetError) as info:
        data.load("cifar10", isolated_env / "data")
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert "data_batch_2" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_the_python_layout_is_not_read_when_the_binary_one_is_there(isolated_env, tmp_path):
    root = isolated_env / "data"
    tiny_data.write_cifar_bin(root, per_batch=10, n_test=10)
    folder = tiny_data.write_cifar_py(root, per_batch=10, n_test=10)
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps(Payload(marker)))
    assert len(data.load("cifar10", root).train_x) == 50
    assert not marker.exists()


def test_a_yaml_params_file_builds_no_objects(tmp_path):
    marker = tmp_path / "pwned"
    params = tmp_path / "params.yml"
    params.write_text(f"filters: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not plain YAML data"):
        load_params_file(str(params))
    assert not marker.exists()


def test_a_crafted_resume_state_is_ignored_not_run(tmp_path, capsys):
    from trial import resume
    from trial.model import build_model
    from trial.optim import OPTIMIZERS, SCHEDULES, param_groups
    cfg = resolve({"dataset": "mnist", "filters": 4, "dense_units": 8})
    model = build_model(cfg, (1, 28, 28))
    opt = OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)
    schedule = SCHEDULES[cfg.lr_schedule](opt, cfg, 10)
    marker = tmp_path / "pwned"
    path = tmp_path / "state.pt"
    torch.save({"key": resume.resume_key(cfg), "epoch": 1, "state": Payload(marker)}, path)
    state = resume.restore(path, cfg, model, opt, schedule, 5)
    assert state.history == [] and not marker.exists()
    assert "ignoring" in capsys.readouterr().err
    # a genuine state still restores
    resume.save(path, cfg, 1, model, opt, schedule, resume.RunState(history=[{"val_accuracy": 0.5}]))
    assert resume.restore(path, cfg, model, opt, schedule, 5).history == [{"val_accuracy": 0.5}]


def test_an_exported_model_names_no_path_of_this_machine(tmp_path):
    from experiments.results.evaluate import export_model
    cfg = resolve({"dataset": "mnist", "filters": 4, "dense_units": 8})
    from trial.model import build_model
    out = export_model(build_model(cfg, (1, 28, 28)), cfg, tmp_path / "model")
    with zipfile.ZipFile(out / "model.pt2") as archive:
        text = b"".join(archive.read(name) for name in archive.namelist()).decode("latin-1")
    for needle in (str(REPO), str(Path.home()), "stack_trace\": \"File", "site-packages"):
        assert needle not in text, needle
    loaded = torch.export.load(str(out / "model.pt2")).module()
    assert loaded(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
