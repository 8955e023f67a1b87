"""`python -m trial` on tiny data: bad parameters, debug runs end to end, missing data, a diverged run and early
stopping. Each run gets its own data, cache and output directory. One debug run is a real subprocess (run_trial); the
others call the same entry point in this process (call_trial), sparing an interpreter and a torch import per run.

    .venv/bin/pytest tests/test_trial_cli.py -q
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch

from tests.conftest import FIELD_CASES, REPO, needs_field_cases
from trial import data
from trial.config import load_params_file, resolve
from trial.inference import evaluate
from trial.model import build_model
from trial.optim import LOSSES
from trial.search_space import sample_file

OUTPUTS = ("config.json", "metrics.jsonl", "final.json", "best.pt", "trial.json")
pytestmark = pytest.mark.usefixtures("torch_one_thread")    # tiny batches: more threads only add overhead


def run_trial(*args, timeout=180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}   # debug mode, never NNI's
    env["OMP_NUM_THREADS"] = "1"    # tiny batches; on a shared CPU extra threads make torch many times slower
    return subprocess.run([sys.executable, "-m", "trial", *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def call_trial(*args) -> subprocess.CompletedProcess:
    """What run_trial returns, from trial.adapter.main called in this process: the same environment (no NNI_
    variables), working directory and one torch thread, with stdout and stderr captured; argparse's exit is a status."""
    from trial.adapter import main
    out, err = io.StringIO(), io.StringIO()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with mock.patch.dict(os.environ, env, clear=True), contextlib.chdir(REPO), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["python", "-m", "trial", *map(str, args)], code, out.getvalue(), err.getvalue())


def read_run(out):
    final = json.loads((out / "final.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return final, metrics


def assert_one_line_error(proc, *words):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "invalid trial parameters" in lines[0]
    for word in words:
        assert word in lines[0]


def test_unknown_key_in_params_file(tiny_root, tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"filters": 16, "filterz": 8}))
    proc = call_trial("--params", params, "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, "'filterz'", "valid parameters")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag,value,key", [("--batch_size", "many", "batch_size"), ("--kernel", "4", "kernel"),
                                            ("--activation", "swish", "activation"), ("--dropout", "2", "dropout")])
def test_bad_value_via_flag(tiny_root, tmp_path, flag, value, key):
    proc = call_trial(flag, value, "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, f"'{key}'")


@pytest.mark.parametrize("args", [["--smoke"],
                                  ["--sample", "search_spaces/fmnist.json", "--sample-seed", "3", "--smoke"],
                                  ["--params", "baselines/deep_cnn.json", "--smoke"]],
                         ids=["smoke", "sample", "baseline"])
def test_debug_run_end_to_end(tiny_root, tmp_path, args):
    out = tmp_path / "out"
    # the smoke run is the real process (`python -m trial` as NNI starts it); the others only vary the parameters
    proc = (run_trial if args == ["--smoke"] else call_trial)(*args, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert "best val accuracy" in proc.stdout and str(out) in proc.stdout

    final, metrics = read_run(out)
    cfg = resolve(json.loads((out / "config.json").read_text()))
    assert cfg.epochs == 1 and cfg.train_subset == 512 and len(metrics) == 1
    assert metrics[0]["default"] == final["best_val_accuracy"] and not final["diverged"]
    provenance = json.loads((out / "trial.json").read_text())
    assert provenance["config_digest"] == cfg.digest()
    smoke = {"train_subset": 512, "val_size": 256, "epochs": 1}
    if final.get("amp_fallback"):   # a first bfloat16 epoch at chance trains again in float32 (trial/precision.py)
        smoke["amp"] = False
    if "--sample" in args:      # the draw is the seeded one, and it is what was trained (under the smoke settings)
        sampled = sample_file(str(REPO / args[1]), int(args[3]))
        assert provenance["sampled_params"] == sampled
        assert cfg == resolve(sampled, smoke)
    if "--params" in args:
        assert cfg == resolve(load_params_file(str(REPO / args[1])), smoke)

    checkpoint = torch.load(out / "best.pt")
    assert resolve(checkpoint["config"]) == cfg
    model = build_model(cfg, data.INFO[cfg.dataset].shape)
    model.load_state_dict(checkpoint["state_dict"])     # strict: every tensor has its place

    # the checkpoint is the weights that scored best_val_accuracy, on the same validation images
    d = data.prepare(cfg.dataset, cfg.val_size, cfg.split_seed, torch.device("cpu"), cfg.train_subset, with_test=False)
    accuracy = evaluate(model, d.val_x, d.val_y, LOSSES[cfg.loss](cfg), amp=False)["accuracy"]
    assert abs(accuracy - final["best_val_accuracy"]) <= 1.5 / cfg.val_size


@pytest.mark.parametrize("how", ["environment", "flag"])
def test_missing_dataset(tiny_root, tmp_path, monkeypatch, how):
    empty = tmp_path / "empty"
    empty.mkdir()
    if how == "environment":
        monkeypatch.setenv("CNNSEARCH_DATA", str(empty))
        proc = call_trial("--smoke", "--dataset", "cifar10", "--output-dir", tmp_path / "out")
    else:
        proc = call_trial("--smoke", "--dataset", "cifar10", "--data-dir", empty, "--output-dir", tmp_path / "out")
    assert proc.returncode != 0
    assert "dataset 'cifar10' not found" in proc.stderr and str(empty) in proc.stderr
    assert "--data-dir" in proc.stderr and "CNNSEARCH_DATA" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_diverged_run_keeps_its_result(tiny_root, tmp_path):
    out = tmp_path / "out"
    proc = call_trial("--smoke", "--optimizer", "sgd", "--learning_rate", "10", "--momentum", "0.99",
                      "--loss", "cross_entropy", "--lr_schedule", "constant", "--epochs", "4", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    assert "DIVERGED" in proc.stdout
    final, metrics = read_run(out)
    assert final["diverged"] is True
    assert "learning rate" in final["error"] and "turn on batch_norm" in final["error"]   # a plain net without BN
    assert final["epochs_run"] == len(metrics) < 4
    # ranked last by the tuner, with a finite number; the accuracy before the divergence is kept beside it
    assert final["default"] == 0.0 and final["diverged_epoch"] == len(metrics) + 1
    assert 0.0 <= final["best_val_accuracy"] <= 1.0
    assert (out / "config.json").is_file() and (out / "trial.json").is_file()


def test_early_stopping(tiny_root, tmp_path):
    out = tmp_path / "out"
    epochs = 10
    proc = call_trial("--smoke", "--epochs", epochs, "--patience", "1", "--lr_schedule", "constant",
                      "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    final, metrics = read_run(out)
    accuracies = [m["default"] for m in metrics]
    assert final["epochs_run"] == len(metrics) < epochs
    assert final["best_val_accuracy"] == final["default"] == max(accuracies)
    assert accuracies[final["best_epoch"] - 1] == max(accuracies)
    assert final["epochs_run"] - final["best_epoch"] == 1       # stopped after one epoch without improvement
    assert [m["epoch"] for m in metrics] == list(range(1, len(metrics) + 1))


@pytest.mark.timeout(600)
def test_compiled_training_saves_plain_weights(tiny_root, tmp_path):
    """--compile true trains through torch.compile and still writes a checkpoint the plain model loads."""
    import torch

    from trial.config import resolve
    from trial.model import build_model
    from trial.train import train
    cfg = resolve({"dataset": "fmnist", "compile": True, "epochs": 1, "val_size": 128, "batch_size": 64,
                   "filters": 8, "dense_units": 16, "threads": 1})
    final = train(cfg, output_dir=tmp_path / "out").metrics
    assert final["epochs_run"] == 1 and 0 <= final["best_val_accuracy"] <= 1
    ckpt = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in ckpt["state_dict"])
    build_model(cfg, (1, 28, 28)).load_state_dict(ckpt["state_dict"])


# ------------------------------------------------------------------------------------ field cases: batch of one


@pytest.mark.parametrize("n,batch_size", [(513, 256), (55000, 97), (2, 1), (1, 1), (257, 256), (1000, 999), (7, 3)])
def test_no_training_batch_of_one_image(n, batch_size):
    from trial.train import batch_starts, batches, steps_per_epoch
    x, y = torch.arange(n).float().view(n, 1, 1, 1), torch.arange(n)
    sizes = [len(b) for b, _ in batches(x, y, batch_size)]
    assert sum(sizes) == n and len(sizes) == steps_per_epoch(n, batch_size) == len(batch_starts(n, batch_size))
    assert n == 1 or min(sizes) >= 2, sizes
    seen = torch.cat([b for _, b in batches(x, y, batch_size)])
    assert sorted(seen.tolist()) == list(range(n))


@needs_field_cases
def test_field_case_batch_norm_with_a_last_batch_of_one_trains(isolated_env, tmp_path, monkeypatch):
    """c04: 513 training images in batches of 256 with BatchNorm used to end in a traceback after the first epoch
    (now refused for its kernel, and, with 4 blocks, trained); c04b (all 55,000 MNIST training images, batch 97)
    leaves the same remainder of one."""
    from tests import tiny_data
    from trial.train import batch_starts
    tiny_data.write_idx_dataset(tmp_path / "data", "MNIST", n_train=800, n_test=100)
    monkeypatch.setenv("CNNSEARCH_DATA", str(tmp_path / "data"))
    case = FIELD_CASES / "c04_bn_last_batch_of_one.json"
    # as handed: 5 blocks on a 28x28 image leave block 5 a 1x1 map, where a 3x3 kernel's outer taps see only padding
    proc = call_trial("--params", case, "--dataset", "mnist", "--output-dir", tmp_path / "as_handed")
    assert_one_line_error(proc, "'kernel'", "1x1 feature map")
    # the same batch arithmetic (513 images, batch 256, BatchNorm) with blocks that fit the image trains
    out = tmp_path / "out"
    proc = call_trial("--params", case, "--dataset", "mnist", "--conv_layers", "4", "--output-dir", out)
    assert proc.returncode == 0, proc.stderr
    final, metrics = read_run(out)
    assert final["epochs_run"] == 1 and len(metrics) == 1 and not final["diverged"]
    # c04b as handed (5 blocks again): refused before any data is read, in one line
    proc = call_trial("--params", FIELD_CASES / "c04b_bn_full_data_batch97.json", "--dataset", "mnist",
                      "--output-dir", tmp_path / "c04b")
    assert_one_line_error(proc, "'kernel'", "1x1 feature map")
    c04b = load_params_file(str(FIELD_CASES / "c04b_bn_full_data_batch97.json"))
    train_images = 60000 - resolve({}).val_size
    assert train_images % c04b["batch_size"] == 1          # the case really has a remainder of one ...
    starts = batch_starts(train_images, c04b["batch_size"])
    assert train_images - starts[-1] == 98                # ... which the last batch takes in


def test_out_of_memory_is_one_line_naming_batch_size_and_parameters(tiny_root, monkeypatch):
    """The GPU's out-of-memory error, raised for real by torch's own exception type from inside the model's forward
    pass on the first batch (no GPU here to exhaust): the run ends with a ConfigError of one line."""
    import torch

    from trial import train as train_mod
    from trial.config import ConfigError
    real_build = train_mod.build_model

    def build_and_fail(cfg, shape, *classes):
        net = real_build(cfg, shape, *classes)

        def hook(module, args):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        net.register_forward_pre_hook(hook)
        return net
    monkeypatch.setattr(train_mod, "build_model", build_and_fail)
    cfg = resolve({"dataset": "mnist", "filters": 8, "dense_units": 16, "batch_size": 64, "epochs": 1,
                   "train_subset": 128, "val_size": 64})
    with pytest.raises(ConfigError) as info:
        train_mod.train(cfg)
    message = str(info.value)
    assert "\n" not in message and "batch_size 64" in message and "parameters" in message
    assert f"{sum(p.numel() for p in real_build(cfg, (1, 28, 28)).parameters()):,}" in message


def test_divergence_advice_fits_the_config():
    from trial.config import resolve
    from trial.train import divergence_advice
    plain = resolve({"family": "plain"})
    assert divergence_advice(plain, amp=False) == "lower learning_rate, or turn on batch_norm"
    assert divergence_advice(resolve({"family": "plain", "batch_norm": True}), amp=False) == "lower learning_rate"
    # the cell network of the CIFAR-10 comparison: BatchNorm in every op, NaN in bfloat16, fine in float32
    from trial import REPO
    nas = resolve({"family": "nas", "nas_arch": str(REPO / "results/cifar10-nas-comparison/evolution-cifar10.json")})
    advice = divergence_advice(nas, amp=True)
    assert "amp false" in advice and "batch_norm" not in advice
