"""The experiment as a whole, for real: two experiments on one machine at once (same cache, same nnictl registry), one
stopped cleanly, the other's NNI manager killed with SIGKILL; the finished trials' results are read back from each
database right away, both are resumed with `nnictl resume` through our secure starter (loopback only), and both run
to their trial count with no trial duplicated or lost, no parameter set trained twice (the shipped random search's
ResumableRandom) and nothing mixed between them.

    .venv/bin/pytest tests/test_experiment_resume.py -q
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.results.export import END_STATES, load_experiment
from tests import tiny_data
from tests.nni_helpers import config_from, experiment_env, free_port, nnictl_path, rest, wait_until, write_config
from trial import REPO

pytestmark = [pytest.mark.nni, pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")]
TRIALS = 5
COMMAND = ("python -m trial --dataset mnist --epochs 1 --train_subset 256 --val_size 128 "
           "--threads 1")


def _secure(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.secure", "nnictl", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def _succeeded(port: int) -> int:
    return sum(t["status"] == "SUCCEEDED" for t in rest(port, "trial-jobs"))


@pytest.mark.timeout(1200, method="signal")
def test_two_experiments_stopped_killed_and_resumed(tmp_path):
    env = experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))
    experiments = {}
    for name in ("clean", "killed"):
        folder = tmp_path / name
        folder.mkdir()
        config = config_from("mnist_random.yml", folder, maxTrialNumber=TRIALS, trialConcurrency=2,
                             trialCommand=COMMAND, experimentName=name)
        config.pop("maxExperimentDuration", None)
        port = free_port()
        proc = _secure(env, "create", "--config", str(write_config(folder / "exp.yml", config)), "--port", str(port))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        registry = json.loads((Path(env["HOME"]) / "nni-experiments" / ".experiment").read_text())
        exp_id = next(k for k, v in registry.items() if v["experimentName"] == name)
        experiments[name] = {"id": exp_id, "port": port, "pid": registry[exp_id]["pid"],
                             "root": Path(config["experimentWorkingDirectory"]) / exp_id}
    try:
        for exp in experiments.values():
            wait_until(lambda: _succeeded(exp["port"]) >= 2, 400, what="two finished trials")
        stop = subprocess.run([nnictl_path(), "stop", experiments["clean"]["id"]], env=env, capture_output=True,
                              text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        os.kill(experiments["killed"]["pid"], signal.SIGKILL)
        before = {}
        for name, exp in experiments.items():
            _, table = load_experiment(exp["root"])          # straight from the database, manager gone
            done = table[table["status"] == "SUCCEEDED"]
            assert len(done) >= 2 and done["final_default"].notna().all(), (name, table)
            before[name] = dict(zip(done["trial_id"], done["final_default"]))
        for name, exp in experiments.items():
            exp["port"] = free_port()
            proc = _secure(env, "resume", exp["id"], "--port", str(exp["port"]))
            assert proc.returncode == 0, (name, proc.stdout + proc.stderr)
            portal = [line for line in proc.stdout.splitlines() if "Web portal URLs" in line]
            assert portal and all("127.0.0.1" in u for u in portal[0].split("URLs:")[1].split())
        for name, exp in experiments.items():
            wait_until(lambda: len(trials := rest(exp["port"], "trial-jobs")) >= TRIALS and all(
                t["status"] in END_STATES for t in trials), 600, what=f"{name}: all trials ended")
    finally:
        for exp in experiments.values():
            subprocess.run([nnictl_path(), "stop", exp["id"]], env=env, capture_output=True, timeout=120)
    dirs = {}
    for name, exp in experiments.items():
        _, table = load_experiment(exp["root"])
        assert table["trial_id"].is_unique and table["parameter_id"].dropna().is_unique, (name, table)
        assert (table["status"] == "SUCCEEDED").sum() >= TRIALS - 1, (name, table)   # the one running at the stop
        finished = table[table["status"] == "SUCCEEDED"]
        assert (finished["n_final"] == 1).all(), (name, table)                     # each result recorded once
        after = dict(zip(table["trial_id"], table["final_default"]))
        assert all(after[t] == v for t, v in before[name].items()), name           # nothing lost, nothing changed
        assert table["final_digest_ok"].dropna().all(), name                       # each result is its own
        digests = [json.loads((Path(d) / "trial.json").read_text())["params_digest"] for d in table["trial_dir"].dropna()]
        assert len(set(digests)) == len(digests), (name, digests)   # the resumed search drew no set a second time
        dirs[name] = {str(Path(d).resolve()) for d in table["trial_dir"].dropna()}
        assert all(d.startswith(str(exp["root"])) for d in dirs[name]), name
    assert not dirs["clean"] & dirs["killed"]
