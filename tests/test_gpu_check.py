"""The GPU check (experiments/studies/gpu_check.py) works before a GPU is ever lent: its CPU mode at a tiny size writes
every section with units and finite numbers and never imports nni; its data (experiments/studies/gpu_data.py) is
refused when a file is missing, extra or altered; and nni_configs/fmnist_gpu.yml is valid for NNI 3.0 and fits what
NNI's local GPU scheduler does.

The fast tests run the parts that stay in one process; the whole CPU mode (which also starts `python -m trial`
processes, one and two at once) is in the slow tier.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.studies import gpu_check, gpu_data
from tests import tiny_data
from trial import REPO

TINY_SIZES = gpu_data.Sizes(cifar_train=250, cifar_test=100, fmnist_train=300, fmnist_test=100)
IN_PROCESS_PARTS = ("families", "accuracy", "oom")
NONE_ALLOWED = {"cuda_version", "cudnn_version", "commit", "uncommitted_changes", "cuda_visible_devices"}
GPU_CONFIG = REPO / "nni_configs" / "fmnist_gpu.yml"


@pytest.fixture(scope="module")
def tiny_gpu_data(tmp_path_factory) -> Path:
    """gpu_data built by the helper from tiny datasets in ../shared/data's layouts."""
    source = tiny_data.write_all(tmp_path_factory.mktemp("source"), n_train=300, n_test=100)
    out = tmp_path_factory.mktemp("checkout") / "gpu_data"
    gpu_data.build(source, out, TINY_SIZES)
    return out


def run_check(data_dir: Path, out: Path, *parts: str) -> dict:
    argv = [sys.executable, "-m", "experiments.studies.gpu_check", "--cpu", "--tiny", "--data-dir", str(data_dir),
            "--out", str(out), "--budget-s", "240"] + (["--parts", *parts] if parts else [])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    assert json.loads(done.stdout) == record     # printed and written: the same JSON
    return record


def nones(obj, key: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in nones(v, k)]
    if isinstance(obj, list):
        return [n for v in obj for n in nones(v, key)]
    return [key] if obj is None else []


def check_record(record: dict, parts) -> None:
    """Every section there, none failed or skipped; every figure with a unit and finite; nni never imported (the
    check records whether it is in sys.modules at its end, after every import of every part, in a fresh process)."""
    assert record["nni_imported"] is False
    assert record["mode"] == "cpu tiny"
    assert record["environment"]["torch_version"] and record["data"]["verified_sha256"] is True
    for part in parts:
        section = record[part]
        assert "error" not in section and "skipped" not in section, section
        assert section["part_s"] <= section["limit_s"] + 60
    for key, value in gpu_check.figures(record):
        assert gpu_check.unit_of(key), f"figure {key!r} = {value!r} has no unit in UNITS"
        assert math.isfinite(value), f"{key} = {value}"
    assert set(nones(record)) <= NONE_ALLOWED, nones(record)


def test_cpu_tiny_in_process_parts(tiny_gpu_data, tmp_path):
    record = run_check(tiny_gpu_data, tmp_path / "gpu_check.json", *IN_PROCESS_PARTS)
    check_record(record, IN_PROCESS_PARTS)
    families = record["families"]["by_family"]
    assert set(families) == {"plain", "residual", "airbench", "nas"}
    for family in families.values():
        assert "error" not in family, family
        for loop in ("harness", "bare", "dataloader"):
            assert family[loop]["images_per_s"] > 0
        assert family["harness_vs_bare_ratio"] > 0 and family["harness"]["first_epoch_s"] > 0
    accuracy = record["accuracy"]
    assert accuracy["seeds"] == [0] and accuracy["train_images"] == 250 and accuracy["test_images"] == 100
    run = accuracy["runs"][0]
    for side in ("reference", "harness"):
        assert 0 <= run[side]["test_accuracy_tta_fraction"] <= 1
    oom = record["oom"]
    assert oom["simulated"] and oom["harness_caught"] and oom["one_line"]
    assert oom["names_batch_size"] and oom["names_params"], oom["message"]


@pytest.mark.slow
def test_cpu_tiny_every_part(tiny_gpu_data, tmp_path):
    record = run_check(tiny_gpu_data, tmp_path / "gpu_check.json")
    check_record(record, gpu_check.PARTS)
    start = record["trial_start"]["cold"]
    assert start["returncode"] == 0 and start["startup_s"] > 0 and len(start["epoch_s"]) == 2
    levels = record["concurrency"]["by_processes"]
    assert set(levels) == {"1", "2"}
    assert len(levels["2"]["per_process_images_per_s"]) == 2 and levels["2"]["returncodes"] == [0, 0]
    assert levels["2"]["total_images_per_s"] == pytest.approx(sum(levels["2"]["per_process_images_per_s"]))
    assert record["concurrency"]["suggested_max_trial_number_per_gpu"] in (1, 2)


def test_manifest_has_hashes_and_counts(tiny_gpu_data):
    manifest = gpu_data.verify(tiny_gpu_data)
    assert len(manifest["files"]) == 10     # 6 CIFAR-10 batches, 4 Fashion-MNIST IDX files
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["datasets"]["cifar10"]["train_images"] == 250
    assert sum(manifest["datasets"]["fmnist"]["test_per_class"]) == 100


@pytest.mark.parametrize("damage", ["flip_a_byte", "delete", "add_shadowing_file", "no_manifest"])
def test_damaged_data_is_refused_in_one_line(tiny_gpu_data, tmp_path, capsys, damage):
    data = tmp_path / "gpu_data"
    shutil.copytree(tiny_gpu_data, data)
    batch = data / "CIFAR10" / "cifar-10-batches-bin" / "data_batch_1.bin.xz"
    if damage == "flip_a_byte":
        raw = bytearray(batch.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        batch.write_bytes(bytes(raw))
    elif damage == "delete":
        batch.unlink()
    elif damage == "add_shadowing_file":
        (batch.parent / "data_batch_1.bin").write_bytes(b"\0" * 3073)
    else:
        (data / gpu_data.MANIFEST).unlink()
    with pytest.raises(gpu_data.DataCheckError) as err:
        gpu_data.verify(data)
    assert "\n" not in str(err.value)
    assert ("MANIFEST.json" if damage == "no_manifest" else "data_batch_1.bin") in str(err.value)

    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--cpu", "--tiny", "--data-dir", str(data), "--out", str(out)]) == 2
    printed = capsys.readouterr().err.strip()
    assert printed.startswith("error: ") and "\n" not in printed
    assert json.loads(out.read_text())["data"]["error"] == printed[len("error: "):]


def test_gpu_config_validates_with_nni():
    from nni.experiment.config import ExperimentConfig

    config = ExperimentConfig.load(GPU_CONFIG)
    config.validate()
    canonical = config.json()
    service = canonical["trainingService"]
    assert canonical["trialGpuNumber"] == 1 and service["platform"] == "local"
    assert service["useActiveGpu"] is True and service["maxTrialNumberPerGpu"] == 2
    # one GPU: never more trials at once than may share it
    assert canonical["trialConcurrency"] <= service["maxTrialNumberPerGpu"]
    assert "--dataset fmnist" in canonical["trialCommand"]


def test_gpu_config_fits_nni_local_gpu_scheduler():
    """Why the config reads as it does, checked against the installed NNI: its local scheduler refuses a request of a
    whole GPU on a one-GPU machine, and useActiveGpu false drops a GPU that any process (NNI's own trials too) uses."""
    import nni_node
    import yaml

    scheduler = (Path(nni_node.__file__).parent / "common" / "trial_keeper" / "task_scheduler" /
                 "scheduler.js").read_text()
    assert "if (gpuNumber >= this.gpus.length)" in scheduler
    assert "gpus = gpus.filter(gpu => !gpu.active);" in scheduler
    local = (Path(nni_node.__file__).parent / "training_service" / "local_v3" / "local.js").read_text()
    assert "gpuNumber /= this.config.maxTrialNumberPerGpu" in local and "rejectActive: !this.config.useActiveGpu" \
        in local
    raw = yaml.safe_load(GPU_CONFIG.read_text())
    assert raw["trialGpuNumber"] / raw["trainingService"]["maxTrialNumberPerGpu"] < 1
    assert raw["trainingService"]["useActiveGpu"] is True
