"""A network's cost and its ONNX export (issue 31): every trial's final metrics carry params, macs, latency_ms,
latency_threads and model_bytes (latency_ms_gpu on CUDA) for every family; a network over max_params, max_macs or
max_latency_ms is refused before its first training step, in one line, exit 2 outside NNI and a final result of
`default` 0.0 under NNI; the ONNX model agrees with PyTorch on random images for every family; predict.py's onnx
runtime gives torch's classes.

    .venv/bin/pytest tests/test_cost_and_onnx.py -q            # the fast tier (cost, limits): -m "not slow"
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.results import predict
from experiments.results.evaluate import export_model
from tests.conftest import REPO
from tests.test_families_any_size import SMALL
from tests.test_trial_cli import call_trial
from trial import adapter, cost
from trial import train as train_mod
from trial.config import ConfigError, resolve
from trial.model import build_model
from trial.networks import AirbenchNet

pytestmark = pytest.mark.usefixtures("torch_one_thread")

COST_KEYS = ("params", "macs", "latency_ms", "latency_threads", "model_bytes")
# onnxruntime against PyTorch, probabilities in [0, 1]: float32 rounding gives ~1e-7 here; 1e-5 leaves room for
# kernels that sum in another order, and is far below any difference that could change a class
ONNX_ATOL = 1e-5
TINY = {"dataset": "cifar10", "val_size": 40, "batch_size": 32, "epochs": 1, "eval_test": False, "threads": 1,
        "tta": "none", "keep": "last"}
FAST = ("plain", "residual", "airbench", "nas")   # trained in the fast tier (1-4 s each); resnet18 is slow


def families():
    return [pytest.param(f, marks=() if f in FAST else pytest.mark.slow, id=f) for f in sorted(SMALL)]


def small(family: str, **over) -> dict:
    return {**SMALL[family], **TINY, **over}


def built(cfg, shape):
    torch.manual_seed(0)
    model = build_model(cfg, shape, 10)
    if isinstance(model, AirbenchNet):
        model.init_whitening(torch.randn(16, *shape))
    return model.eval()


# ---- item 1: the figures ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", families())
def test_final_metrics_carry_every_cost_figure(tiny_root, tmp_path, family):
    """A trial of every family, on tiny CIFAR-10 with limits it keeps, reports every figure in its final metrics and
    final.json: numbers, params as trial.model counts them, MACs as count_macs gives them for the built network."""
    cfg = resolve(small(family, max_params=10**9, max_macs=10**12, max_latency_ms=1e4))
    result = train_mod.train(cfg, output_dir=tmp_path / "run")
    final = result.metrics
    saved = json.loads((tmp_path / "run" / "final.json").read_text())
    for key in COST_KEYS:
        assert isinstance(final[key], (int, float)) and not isinstance(final[key], bool), key
        assert final[key] > 0 and math.isfinite(final[key]), key
        assert saved[key] == final[key], key
    assert "latency_ms_gpu" not in final   # a CPU trial
    assert final["latency_threads"] == 1 and final["epochs_run"] == 1 and "refused" not in final
    assert final["params"] == sum(p.numel() for p in result.model.parameters())
    assert final["macs"] == cost.count_macs(result.model, (3, 32, 32))
    assert final["model_bytes"] == cost.state_dict_bytes(result.model)


def test_measure_counts_a_known_network_and_leaves_it_as_it_was():
    """MACs of a network counted by hand: conv 3->8, 3x3, on 8x8 (8*8 outputs x 8 channels x 27 taps), a linear
    8*4*4 -> 10 after a 2x2 pool; measure leaves the model's mode, device, weights and the global random state."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(128, 10)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(1)
    expected_draw = torch.rand(1)
    torch.manual_seed(1)
    figures = cost.measure(net, (3, 8, 8), "cpu", threads=1, budget_s=0.2)
    assert torch.rand(1) == expected_draw   # the training that follows draws what it drew before
    assert figures["macs"] == 8 * 8 * 8 * 27 + 128 * 10
    assert figures["params"] == 8 * 27 + 128 * 10 + 10
    assert figures["latency_threads"] == 1 and 0 < figures["latency_ms"] < 1000
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_trial_also_reports_its_gpu_latency():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    net(torch.zeros(1, 3, 8, 8))
    figures = cost.measure(net.cuda(), (3, 8, 8), "cuda", budget_s=0.2)
    assert figures["latency_ms_gpu"] > 0 and figures["latency_ms"] > 0


def test_limits_are_config_keys():
    """max_params, max_macs, max_latency_ms resolve like any key: from flags' strings, null is no limit, negative
    values and wrong types are refused naming the key; a config without them keeps its digest."""
    cfg = resolve({"max_params": "1000", "max_macs": 5e6, "max_latency_ms": "2.5"})
    assert (cfg.max_params, cfg.max_macs, cfg.max_latency_ms) == (1000, 5_000_000, 2.5)
    assert resolve({"max_params": None}).max_params == 0
    assert "max_params" not in resolve({}).to_dict() and resolve({"max_params": 0}).digest() == resolve({}).digest()
    for bad in ({"max_params": -1}, {"max_latency_ms": "fast"}, {"max_macs": 1.5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            resolve(bad)


# ---- item 2: limits -----------------------------------------------------------------------------------------------

def never_trains(*args, **kwargs):
    raise AssertionError("a training step ran for a network over a limit")


@pytest.mark.parametrize("key, limit", [("max_params", 1000), ("max_macs", 1000), ("max_latency_ms", 1e-6)])
def test_a_network_over_a_limit_is_refused_before_its_first_step(tiny_root, tmp_path, monkeypatch, key, limit):
    """Outside NNI: exit 2, one `error:` line naming the limit, the measured value and the fix; no training step (a
    train_epoch that fails if called), no epoch in metrics.jsonl, no weights; final.json says why, with the
    figures."""
    monkeypatch.setattr(train_mod, "train_epoch", never_trains)
    out = tmp_path / "run"
    proc = call_trial("--dataset", "fmnist", "--data-dir", tiny_root, "--val_size", "100", "--epochs", "1",
                      "--threads", "1", f"--{key}", limit, "--output-dir", out)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert "network refused" in errors[0] and f"{key} = " in errors[0] and f"raise {key}" in errors[0]
    final = json.loads((out / "final.json").read_text())
    assert final["default"] == 0.0 and final["refused"] is True and final["constraint"] == key
    assert final["epochs_run"] == 0 and all(k in final for k in COST_KEYS)
    measured = final[cost.LIMITS[key][0]]
    assert measured > limit and cost.LIMITS[key][2].format(measured) in errors[0]
    assert (out / "metrics.jsonl").read_text() == "" and not (out / "best.pt").exists()


class FakeNNI:
    """trial.adapter.NNIReporter without nni: records what the trial would report."""
    finals: list[dict] = []
    intermediates: list[dict] = []

    def __init__(self):
        self.params, self.parameter_id = {}, 7

    def intermediate(self, metrics: dict) -> None:
        FakeNNI.intermediates.append(metrics)

    def final(self, metrics: dict) -> None:
        # what NNIReporter.final sends: numbers only, booleans as 0/1
        FakeNNI.finals.append({k: (int(v) if isinstance(v, bool) else v) for k, v in metrics.items()
                               if isinstance(v, (int, float)) and k != "test_accuracy"})


def test_a_refused_trial_under_nni_reports_default_zero_and_ends(tiny_root, tmp_path, monkeypatch):
    """Under NNI the refused trial reports a final result the tuner ranks last (`default` 0.0, never NaN) with the
    measured figures and `refused` 1, no intermediate result, and exits 0 at once (see trial.adapter.main)."""
    monkeypatch.setattr(train_mod, "train_epoch", never_trains)
    monkeypatch.setattr(adapter, "NNIReporter", FakeNNI)
    monkeypatch.setattr(FakeNNI, "finals", [])
    monkeypatch.setattr(FakeNNI, "intermediates", [])
    out = tmp_path / "trial"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    err = io.StringIO()
    with mock.patch.dict(os.environ, {**env, "NNI_PLATFORM": "local", "NNI_OUTPUT_DIR": str(out)}, clear=True), \
            contextlib.chdir(REPO), contextlib.redirect_stderr(err):
        code = adapter.main(["--dataset", "fmnist", "--data-dir", str(tiny_root), "--val_size", "100", "--threads",
                             "1", "--max_params", "1000"])
    assert code == 0, err.getvalue()
    assert FakeNNI.intermediates == [] and len(FakeNNI.finals) == 1
    final = FakeNNI.finals[0]
    assert final["default"] == 0.0 and final["refused"] == 1 and final["parameter_id"] == 7
    assert all(k in final for k in COST_KEYS) and final["params"] > 1000
    assert [line for line in err.getvalue().splitlines() if line.startswith("error")] == [
        f"error: network refused: {json.loads((out / 'final.json').read_text())['error']}"]
    assert (out / "final_reported.json").is_file()


# ---- item 5: ONNX -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> its exported folder (export_model of the family's small network at random weights, 3x32x32)."""
    folders = {}

    def export(family):
        if family not in folders:
            cfg = resolve(small(family))
            folders[family] = export_model(built(cfg, (3, 32, 32)), cfg, tmp_path_factory.mktemp(family))
        return folders[family]
    return export


@pytest.mark.slow   # an ONNX export takes 2-4 s (torch.onnx's dynamo exporter), the first in a process 7 s
@pytest.mark.parametrize("family", sorted(SMALL))
def test_the_onnx_model_agrees_with_pytorch(exported, family):
    """model.onnx, run by onnxruntime, gives model.pt2's probabilities within ONNX_ATOL on random raw-pixel images
    of a batch size neither check used; export_model recorded its own check in model.json; the graph takes
    `pixels` [batch, 3, 32, 32] and names no path of this machine; model.json says what an ONNX user needs."""
    import onnx
    import onnxruntime
    folder = exported(family)
    meta = json.loads((folder / "model.json").read_text())
    assert 0 <= meta["onnx"]["max_abs_diff"] <= ONNX_ATOL and meta["onnx"]["images"] >= 2
    for key, value in {"layout": "NCHW", "dtype": "float32", "value_range": [0, 255], "channels": 3,
                       "image_size": 32, "colour": "RGB", "input_shape": [3, 32, 32]}.items():
        assert meta[key] == value, key
    assert len(meta["classes"]) == 10 and "resize" in meta and "mean" in meta["normalisation"]
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["pixels"] and [o.name for o in graph.output] == ["probabilities"]
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    text = (folder / "model.onnx").read_bytes().decode("latin-1")
    assert str(REPO) not in text and "site-packages" not in text
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": x.numpy()})[0]
    with torch.no_grad():
        want = torch.export.load(str(folder / "model.pt2")).module()(x).numpy()
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=ONNX_ATOL)


@pytest.mark.slow
def test_predict_runs_either_runtime_with_the_same_classes(exported, tmp_path):
    """predict.py --runtime onnx (and auto, which picks it here) gives torch's class and probability, within
    ONNX_ATOL, for image files; a folder without model.onnx is one line and status 2 for --runtime onnx."""
    folder = exported("plain")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(paths[-1])

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = predict.main([str(a) for a in args])
        return status, [line.split("\t") for line in out.getvalue().splitlines()], err.getvalue()
    rows = {runtime: run(folder, *paths, "--runtime", runtime) for runtime in ("torch", "onnx", "auto")}
    assert all(status == 0 for status, _, _ in rows.values())
    torch_rows = rows["torch"][1]
    assert len(torch_rows) == 4
    for runtime in ("onnx", "auto"):
        assert [r[:2] for r in rows[runtime][1]] == [r[:2] for r in torch_rows]
        # printed to 4 decimals: values within ONNX_ATOL may round one unit apart
        assert all(abs(float(a[2]) - float(b[2])) <= 1.01e-4 for a, b in zip(rows[runtime][1], torch_rows))
    assert not isinstance(predict.load(folder, "auto")[0], torch.nn.Module)   # onnxruntime's, not torch's
    (folder / "model.onnx").rename(tmp_path / "away.onnx")
    try:
        status, _, err = run(folder, paths[0], "--runtime", "onnx")
        assert status == 2 and err.count("\n") == 1 and "model.onnx" in err
        assert run(folder, paths[0], "--runtime", "auto")[0] == 0   # falls back to torch
    finally:
        (tmp_path / "away.onnx").rename(folder / "model.onnx")


@pytest.mark.nni
@pytest.mark.timeout(300, method="signal")
def test_a_real_nni_experiment_ranks_refused_trials_last(tmp_path):
    """The shipped MNIST config (TPE) with `--max_params 1000` in its trialCommand: every trial is refused before
    training, ends SUCCEEDED, and NNI's database holds its one final result: `default` 0.0, `refused` 1 and the
    measured figures; no intermediate result (no epoch ran)."""
    from tests import tiny_data
    from tests.nni_helpers import config_from, experiment_env, running_experiment, write_config
    env = experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))
    config = config_from("mnist.yml", tmp_path, maxTrialNumber=2, maxExperimentDuration="4m")
    config["trialCommand"] += " --train_subset 256 --val_size 128 --max_params 1000"
    with running_experiment(write_config(tmp_path / "refused.yml", config), env) as exp:
        trials = exp.wait_for_trials(2, timeout=240)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 2, exp.logs()
        for trial in trials:
            finals, periodical = exp.final_and_intermediate(trial["trialJobId"])
            assert len(finals) == 1 and periodical == [], (finals, periodical)
            final = finals[0]["value"]
            assert final["default"] == 0.0 and final["refused"] == 1 and final["params"] > 1000
            assert all(isinstance(final[k], (int, float)) for k in COST_KEYS)
            assert json.loads((exp.trial_dir(trial) / "final.json").read_text())["constraint"] == "max_params"
