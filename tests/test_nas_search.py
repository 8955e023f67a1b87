"""Architecture search for real, on tiny data: a multi-trial NasExperiment (regularized evolution, random) on NNI's
local training service, its manager on a free port that listens on 127.0.0.1 only, with a private HOME and working
directory, stopped by its own id; and one-shot runs (DARTS, GumbelDARTS, RandomOneShot). Each writes an architecture
file, which `python -m trial --arch FILE` retrains to a final metric and experiments.report takes as a winner and as a
baseline.

    .venv/bin/pytest tests/test_nas_search.py -q        # about 5 minutes on 2 cores
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from experiments.results.export import load_experiment, nni_parameters
from tests import tiny_data
from tests.nni_helpers import (
    RunningExperiment,
    experiment_env,
    free_port,
    nnictl_path,
    processes_with,
    rest,
    wait_until,
)
from trial import REPO
from trial.config import load_arch_file, params_digest, resolve
from trial.nas_space import check_arch

pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")]

EPOCHS = 2
TRIAL_OPTIONS = ["--epochs", str(EPOCHS), "--train_subset", "64", "--val_size", "32", "--batch_size", "32"]
RETRAIN = ["--epochs", "1", "--train_subset", "64", "--val_size", "32", "--batch_size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """The environment of a search: tiny datasets, its own cache and HOME (NNI's experiment registry), one thread."""
    tmp = tmp_path_factory.mktemp("nas")
    return tmp, experiment_env(tmp, tiny_data.write_all(tmp / "data"))


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (IPv4 dotted, IPv6 as 32 hex digits)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:    # 0A: LISTEN
                found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)) if len(address) == 8
                          else address)
    return found


def stop(launcher: subprocess.Popen, exp_id: str | None, env: dict) -> None:
    """End the search however the test ended: the launcher gets SIGINT (NNI stops the experiment on
    KeyboardInterrupt), then `nnictl stop <id>` (never --all); whatever still runs with this test's private HOME (the
    manager, trials) is killed by its pid, and an exit that left any is an error."""
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(timeout=30)
    if exp_id is not None:   # a no-op when the launcher stopped it
        subprocess.run([nnictl_path(), "stop", exp_id], env=env, capture_output=True, timeout=120)
    marker = f"HOME={env['HOME']}"
    try:
        wait_until(lambda: not processes_with(marker), 60, 0.5, "the experiment's processes to exit")
    except TimeoutError:
        left = [pid for pid in processes_with(marker) if pid != os.getpid()]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes of experiment {exp_id} outlived the search: {left} (killed)") from None


def retrain(arch_file: Path, out: Path, env: dict) -> dict:
    """`python -m trial --arch FILE` in debug mode: its final metrics."""
    debug_env = {k: v for k, v in env.items() if not k.startswith("NNI_")}
    proc = subprocess.run([sys.executable, "-m", "trial", "--arch", str(arch_file), *RETRAIN, "--output-dir",
                           str(out)], cwd=REPO, env=debug_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


@pytest.mark.nni
@pytest.mark.timeout(1800, method="signal")   # a timeout raises here, so the finally below stops the experiment
@pytest.mark.parametrize("strategy", ["evolution", "random"])
def test_multitrial_search_on_loopback_reports_and_exports(strategy, tiny_env, tmp_path):
    tmp, env = tiny_env
    port, workdir, out = free_port(), tmp_path / "nni-experiments", tmp_path / "arch.json"
    command = [sys.executable, "-m", "experiments.nas.multitrial", "--dataset", "fmnist", "--strategy", strategy,
               "--trials", "3", "--concurrency", "2", "--duration", "25m", "--port", str(port), "--population", "2",
               "--sample-size", "2", "--workdir", str(workdir), "--out", str(out), *TRIAL_OPTIONS]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: [output.append(line) for line in proc.stdout], daemon=True)
    reader.start()
    exp_id = None
    try:
        def started():
            found = re.search(r"only; experiment (\w+)", "".join(output))
            return found and found.group(1)
        exp_id = wait_until(started, 120, 0.5, "the launcher to name its experiment")
        wait_until(lambda: rest(port, "check-status", timeout=3), 120, 0.5, "the REST API on 127.0.0.1")
        assert listening_addresses(port) == {"127.0.0.1"}, listening_addresses(port)
        proc.wait(timeout=1600)   # 3 tiny trials end in about a minute; the margin is for a CPU shared with others
    finally:
        stop(proc, exp_id, env)
        reader.join(timeout=10)
    log = "".join(output)
    assert proc.returncode == 0, log[-5000:]

    _, table = load_experiment(workdir / exp_id)
    assert len(table) == 3 and (table["status"] == "SUCCEEDED").all(), table[["trial_id", "status"]]
    # per-epoch and final validation accuracy reached NNI; each result is the architecture the trial trained
    assert (table["n_intermediate"] == EPOCHS).all() and (table["n_final"] == 1).all()
    assert table["final_default"].between(0, 1).all()
    assert table["final_digest_ok"].all()
    # NNI's record may pair a trial with another trial's model (NNI 3.0, trialConcurrency > 1); what the strategy
    # generated under the parameter id a trial received is what that trial trained
    generated = RunningExperiment(exp_id, port, workdir).generated_parameters()
    for _, row in table.iterrows():
        own = json.loads((Path(row["trial_dir"]) / "trial.json").read_text())
        assert params_digest(nni_parameters({"parameters": generated[str(own["parameter_id"])]})) == \
            own["params_digest"]
        config = json.loads((Path(row["trial_dir"]) / "config.json").read_text())
        assert config["family"] == "nas" and config["epochs"] == EPOCHS
        assert config["nas_arch"] == check_arch(own["sampled_params"]["nas_arch"])
    best = table.sort_values("final_default", ascending=False).iloc[0]
    params = load_arch_file(str(out))
    assert params["dataset"] == "fmnist" and exp_id in json.loads(out.read_text())["_comment"]
    assert resolve(params).nas_arch == json.loads((Path(best["trial_dir"]) / "config.json").read_text())["nas_arch"]
    final = retrain(out, tmp_path / "retrain", env)
    assert 0 <= final["best_val_accuracy"] <= 1 and final["epochs_run"] == 1


@pytest.fixture(scope="module")
def oneshot_archs(tiny_env):
    """DARTS, GumbelDARTS and RandomOneShot, one tiny epoch each: strategy -> (architecture file, output).
    GumbelDARTS instead runs under a wall-clock budget (--max-time 0.2 min with 5000 epochs asked: without the budget
    it would outlast the timeout) and carries the DARTS recipe (--params) into its architecture file. DARTS searches
    the space without cell gates (--no-cell-gate), the others with them (the default)."""
    tmp, env = tiny_env
    found = {}
    for strategy in ("darts", "gumbel", "random"):
        out = tmp / f"{strategy}.json"
        budget = ["--epochs", "5000", "--max-time", "0.2", "--params", str(REPO / "recipes" / "nas_darts.json")] \
            if strategy == "gumbel" else ["--epochs", "1"]
        if strategy == "darts":
            budget.append("--no-cell-gate")
        proc = subprocess.run([sys.executable, "-m", "experiments.nas.oneshot", "--dataset", "fmnist", "--strategy",
                               strategy, *budget, "--train-subset", "32", "--val-size", "32",
                               "--batch-size", "16", "--candidates", "2", "--threads", "1",
                               "--workdir", str(tmp / "oneshot"), "--out", str(out)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        found[strategy] = (out, proc)
    return found


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("strategy", ["darts", "gumbel", "random"])
def test_oneshot_search_exports_an_architecture_that_retrains(strategy, oneshot_archs, tiny_env, tmp_path):
    out, proc = oneshot_archs[strategy]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    if strategy == "gumbel":    # stopped by its wall-clock budget, not by the 5000 epochs
        assert "Epoch 0:" in proc.stdout + proc.stderr and "Time limit reached" in proc.stderr
    else:
        assert "Epoch 0: 100%" in proc.stdout + proc.stderr, "Lightning's progress bar"
    assert f"architecture: {out}" in proc.stdout
    cfg = resolve(load_arch_file(str(out)))
    assert cfg.family == "nas" and cfg.dataset == "fmnist"
    # the retraining keeps the gates the supernet was searched with
    assert cfg.nas_cell_gate == (strategy != "darts")
    assert ("cells gated" in json.loads(out.read_text())["_comment"]) == (strategy != "darts")
    if strategy == "random":
        assert "candidate 2/2" in proc.stderr and "on the supernet" in json.loads(out.read_text())["_comment"]
    if strategy == "gumbel":    # the recipe travels with the architecture; the budget is recorded
        recipe = json.loads((REPO / "recipes" / "nas_darts.json").read_text())
        assert (cfg.optimizer, cfg.learning_rate, cfg.lr_schedule, cfg.batch_size) == \
            (recipe["optimizer"], recipe["learning_rate"], recipe["lr_schedule"], recipe["batch_size"])
        assert "(at most 0.2 min)" in json.loads(out.read_text())["_comment"]
    else:
        assert cfg.optimizer == "adam"      # no --params: the harness defaults
    final = retrain(out, tmp_path / "retrain", tiny_env[1])
    assert 0 <= final["best_val_accuracy"] <= 1 and final["epochs_run"] == 1


@pytest.mark.timeout(900)
def test_report_takes_an_architecture_as_winner_and_baseline(oneshot_archs, tiny_env, tmp_path, monkeypatch):
    from experiments.results import report
    for key in ("CNNSEARCH_DATA", "CNNSEARCH_CACHE", "CNNSEARCH_NO_DOWNLOAD", "HOME"):
        monkeypatch.setenv(key, tiny_env[1][key])
    darts, random_choice = oneshot_archs["darts"][0], oneshot_archs["random"][0]
    simple, out = REPO / "baselines" / "simple_cnn.json", tmp_path / "report"
    assert report.main(["--winner", str(darts), "--baseline", str(random_choice), str(simple), "--seeds", "0",
                        "--smoke", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["groups"]) == {"winner1_darts", "baseline_random", "baseline_simple_cnn"}
    assert summary["experiment_id"] is None and summary["winner_files"] == [str(darts)]
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 and runs["test_accuracy"].between(0, 1).all()
    assert (out / "model" / "model.pt2").is_file()      # the searched network exports like every family
    assert "Winners given as files" in (out / "report.md").read_text()


def test_oneshot_refuses_a_recipe_that_sets_what_it_searches(tmp_path):
    from experiments.nas.oneshot import retraining_recipe
    from trial.config import ConfigError
    assert retraining_recipe(None, "fmnist") == {"dataset": "fmnist"}
    assert retraining_recipe(None, "fmnist", cell_gate=True) == {"dataset": "fmnist", "nas_cell_gate": True}
    bad = tmp_path / "recipe.json"
    for content, message in (({"family": "airbench"}, "sets family: the search chooses"),
                             ({"nas_cell_gate": False}, "sets nas_cell_gate: the search chooses"),
                             ({"dataset": "mnist"}, "is for dataset 'mnist'"),
                             ({"learning_rate": -1}, "learning_rate")):
        bad.write_text(json.dumps(content))
        with pytest.raises(ConfigError, match=message):
            retraining_recipe(str(bad), "fmnist")
