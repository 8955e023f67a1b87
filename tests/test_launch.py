"""The remote launcher: a workers file becomes a valid NNI remote config with what NNI 3.0 needs; bad input and a
taken port are refused with the reason. (Real SSH workers: a later test with a private sshd.)"""
from __future__ import annotations

import socket

import pytest
import yaml
from nni.experiment.config import ExperimentConfig

from experiments.launch import remote as launch
from tests.nni_helpers import REPO


@pytest.fixture
def workers_file(tmp_path):
    key = tmp_path / "id_test"
    key.write_text("not a real key; the launcher only checks it exists\n")
    path = tmp_path / "workers.yml"
    path.write_text(yaml.safe_dump({
        "manager_ip": "10.1.2.3", "data_dir": "/data/cnnsearch",
        "workers": [{"host": "gpu1", "user": "alice", "key_file": str(key), "python": "/opt/venv/bin/python",
                     "gpus": [0, 1], "trials_per_gpu": 2},
                    {"host": "cpu1", "port": 2222, "user": "bob", "key_file": str(key), "python": "/usr/bin/python3"}]}))
    return path


@pytest.mark.parametrize("name", ["mnist.yml", "fmnist.yml", "cifar10.yml", "mnist_hyperband.yml"])
def test_every_search_becomes_a_valid_remote_config(workers_file, tmp_path, name):
    out = tmp_path / "remote.yml"
    assert launch.main([str(REPO / "nni_configs" / name), "--workers", str(workers_file), "--write", str(out)]) == 0
    config = ExperimentConfig.load(out)
    config.validate()
    raw = yaml.safe_load(out.read_text())
    ts = raw["trainingService"]
    assert ts["platform"] == "remote" and ts["reuseMode"] is False and raw["nniManagerIp"] == "10.1.2.3"
    gpu, cpu = ts["machineList"]
    assert gpu["pythonPath"] == "/opt/venv/bin" and gpu["gpuIndices"] == [0, 1] and gpu["maxTrialNumberPerGpu"] == 2
    assert cpu["port"] == 2222 and "gpuIndices" not in cpu
    assert raw["trialGpuNumber"] == 1 and raw["trialConcurrency"] >= 5
    assert raw["trialCommand"].endswith("--data-dir /data/cnnsearch")
    assert raw["trialCodeDirectory"] == str(REPO)
    assert raw["trialCommand"].startswith("python -m trial")   # two interpreters: PATH (pythonPath) decides


def test_one_interpreter_everywhere_is_named_in_the_trial_command(workers_file, tmp_path):
    data = yaml.safe_load(workers_file.read_text())
    for w in data["workers"]:
        w["python"] = "/opt/venv/bin/python"
    workers_file.write_text(yaml.safe_dump(data))
    config = launch.remote_config(REPO / "nni_configs" / "fmnist.yml", launch.load_workers(workers_file), "10.0.0.1")
    assert config["trialCommand"].startswith("/opt/venv/bin/python -m trial --dataset fmnist")


@pytest.mark.parametrize("change, message", [
    (lambda w: w["workers"][0].pop("host"), "lacks ['host']"),
    (lambda w: w["workers"][0].update(keyfile="x"), "unknown keys ['keyfile']"),
    (lambda w: w["workers"][0].update(key_file="/nonexistent/key"), "key file /nonexistent/key does not exist"),
    (lambda w: w.update(workers=[]), "non-empty `workers:` list"),
])
def test_bad_workers_files_say_what_is_wrong(workers_file, tmp_path, capsys, change, message):
    data = yaml.safe_load(workers_file.read_text())
    change(data)
    workers_file.write_text(yaml.safe_dump(data))
    assert launch.main([str(REPO / "nni_configs" / "fmnist.yml"), "--workers", str(workers_file), "--write",
                        str(tmp_path / "r.yml")]) == 2
    assert message in capsys.readouterr().err


def test_a_taken_port_is_refused_before_anything_starts(workers_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        while True:   # a taken port whose predecessor is free: only port + 1 is in the way
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
            if launch.port_free(port - 1):
                break
            s.close()
            s = socket.socket()
        s.listen()
        assert launch.main([str(REPO / "nni_configs" / "fmnist.yml"), "--workers", str(workers_file),
                            "--port", str(port - 1)]) == 2
    assert f"port {port} is taken" in capsys.readouterr().err


def test_upload_size_honours_nniignore(tmp_path):
    (tmp_path / ".nniignore").write_text("data\n*.pt\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 5000)
    (tmp_path / "model.pt").write_bytes(b"x" * 3000)
    (tmp_path / "code.py").write_bytes(b"x" * 100)
    assert launch.upload_size(tmp_path) == 100 + len("data\n*.pt\n")
