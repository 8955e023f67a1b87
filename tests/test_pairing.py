"""experiments/launch/pairing.js, and the trial's side of a resumed experiment.

Real NNI experiments (nnictl, the manager, NNI's Random tuner, the local training service) whose trials are the
load study's trial (experiments/studies/load_trial.py: the adapter's whole NNI path, no training, a few seconds each):
with the preload every trial trains the parameters NNI records for it, also at four trials at once, and parameter ids
go on after `nnictl resume` where NNI 3.0 hands out ids again. Then, without NNI: a trial that NNI re-runs after its
final result was reported (its end unrecorded when the manager stopped) never trains again, whatever parameters NNI
sends the second time.

    .venv/bin/pytest tests/test_pairing.py -q -s      # -s prints how many trials NNI mis-paired without the preload
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from experiments.launch import secure
from experiments.results.export import END_STATES
from tests import tiny_data
from tests.nni_helpers import (
    config_from,
    experiment_env,
    nnictl_path,
    own_record,
    recorded_parameters,
    rest,
    running_experiment,
    wait_until,
    write_config,
)
from trial import adapter
from trial.config import params_digest

NO_TRAIN = "python -m experiments.studies.load_trial --dataset mnist --threads 1"


def mispaired(exp, trials: list[dict]) -> list[str]:
    return [t["trialJobId"] for t in trials
            if params_digest(recorded_parameters(t)["parameters"]) != own_record(exp, t)["params_digest"]
            or recorded_parameters(t)["parameter_id"] != own_record(exp, t)["parameter_id"]]


def without_pairing(env: dict) -> dict:
    env = dict(env)
    env["NODE_OPTIONS"] = env["NODE_OPTIONS"].replace(f'--require "{secure.PAIRING}"', "").strip()
    return env


@pytest.fixture
def env(tmp_path):
    return experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))


def random_search(tmp_path: Path, trials: int, concurrency: int) -> Path:
    config = config_from("mnist_random.yml", tmp_path, maxTrialNumber=trials, trialConcurrency=concurrency,
                         trialCommand=NO_TRAIN, maxExperimentDuration="10m")
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(tmp_path / "random.yml", config)


@pytest.mark.nni
@pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")
@pytest.mark.timeout(420, method="signal")
def test_every_trial_trains_the_parameters_nni_records_for_it(tmp_path, env):
    assert f'--require "{secure.PAIRING}"' in env["NODE_OPTIONS"]
    with running_experiment(random_search(tmp_path / "with", 12, 4), env) as exp:
        trials = exp.wait_for_trials(12, timeout=300)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 12, exp.logs()
        assert mispaired(exp, trials) == []
        ids = [own_record(exp, t)["parameter_id"] for t in trials]
        assert sorted(ids) == list(range(12))
        log = (exp.root / "log" / "nnictl_stderr.log").read_text(errors="replace")
        assert "pairing.js" not in log, log          # both patches found the NNI code they were written for
    # NNI's own pairing, for the record (not asserted: it depends on which trial asks first)
    with running_experiment(random_search(tmp_path / "without", 12, 4), without_pairing(env)) as exp:
        trials = exp.wait_for_trials(12, timeout=300)
        print(f"\nwithout pairing.js: {len(mispaired(exp, trials))} of {len(trials)} trials mis-paired by NNI")


def ended(trials: list[dict], count: int) -> list[dict] | None:
    return trials if len(trials) == count and all(t["status"] in END_STATES for t in trials) else None


SLEEPY = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, os.getcwd())           # NNI starts it in trialCodeDirectory, the repository
from trial import adapter

def run(cfg, args, sampled, out, report):
    # the first trial to start sleeps until the experiment is stopped; every other (its re-run too) ends at once
    try:
        os.close(os.open(os.path.join({folder!r}, "sleeper"), os.O_CREAT | os.O_EXCL))
        time.sleep(600)
    except FileExistsError:
        pass
    return {{"default": 0.5}}

sys.exit(adapter.main(run=run))
"""


@pytest.mark.nni
@pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")
@pytest.mark.timeout(420, method="signal")
@pytest.mark.parametrize("preload", [True, False], ids=["pairing", "nni-alone"])
def test_parameter_ids_go_on_after_resume(tmp_path, env, preload):
    """Four trials, two at a time; the first sleeps while the other three end, then the experiment is stopped and
    resumed with room for one more. NNI re-runs the sleeper, and NNI 3.0 alone gives the new trial the id after the
    sleeper's (its dispatcher learns the re-run trials' ids only), an id a finished trial holds; with pairing.js the
    new trial's id comes after every earlier one."""
    env = env if preload else without_pairing(env)
    script = tmp_path / "sleepy.py"
    script.write_text(SLEEPY.format(folder=str(tmp_path)))
    config = config_from("mnist_random.yml", tmp_path, maxTrialNumber=4, trialConcurrency=2,
                         trialCommand=f"python {script} --dataset mnist --threads 1", maxExperimentDuration="10m")
    with running_experiment(write_config(tmp_path / "random.yml", config), env) as exp:
        wait_until(lambda: sorted(t["status"] for t in exp.trials()) == ["RUNNING"] + ["SUCCEEDED"] * 3, 180,
                   what="three trials ended beside the sleeping one")
    port = exp.port
    # nnictl itself: the secure starter would load the preload again
    resumed = subprocess.run([nnictl_path(), "resume", exp.id, "--port", str(port)], env=env, capture_output=True,
                             text=True, timeout=180)
    try:
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        update = subprocess.run([nnictl_path(), "update", "trialnum", exp.id, "--value", "5"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert update.returncode == 0, update.stdout + update.stderr
        trials = wait_until(lambda: ended(rest(port, "trial-jobs"), 5), 180, what="five ended trials")
    finally:
        subprocess.run([nnictl_path(), "stop", exp.id], env=env, capture_output=True, timeout=120)
    assert [t["status"] for t in trials] == ["SUCCEEDED"] * 5
    ids = sorted(own_record(exp, t)["parameter_id"] for t in trials)
    if preload:
        assert ids == [0, 1, 2, 3, 4]
    else:
        assert len(set(ids)) < len(ids), ids   # NNI's own resume hands out an id again: what the preload fixes


# ---- a re-run trial, without NNI ------------------------------------------------------------------------------------

class FakeReporter:
    """NNIReporter's interface, with the parameters NNI sends this run."""
    params: dict = {}
    finals: list = []

    def __init__(self):
        self.params, self.parameter_id = FakeReporter.params, 3

    def intermediate(self, metrics: dict) -> None:
        pass

    def final(self, metrics: dict) -> None:
        FakeReporter.finals.append(metrics)


def run_trial(out: Path, trial_id: str, params: dict, monkeypatch) -> tuple[int, list[dict], str]:
    """adapter.main under a fake NNI as trial `trial_id` in folder `out`; what it ran, reported and said."""
    ran = []

    def run(cfg, args, sampled, out, report):
        ran.append(sampled)
        return {"default": 0.5, "best_val_accuracy": 0.5}

    monkeypatch.setattr(adapter, "NNIReporter", FakeReporter)
    monkeypatch.setattr(FakeReporter, "params", params)
    monkeypatch.setattr(FakeReporter, "finals", [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    err = io.StringIO()
    with mock.patch.dict(os.environ, {**env, "NNI_PLATFORM": "local", "NNI_OUTPUT_DIR": str(out),
                                      "NNI_TRIAL_JOB_ID": trial_id}, clear=True), contextlib.redirect_stderr(err):
        code = adapter.main(["--dataset", "mnist"], run=run)
    assert code == 0, err.getvalue()
    return len(ran), FakeReporter.finals, err.getvalue()


FIRST, OTHER = {"filters": 32, "learning_rate": 0.01}, {"filters": 128, "learning_rate": 0.001}


def test_a_rerun_of_a_reported_trial_does_not_train_again_even_with_other_parameters(tmp_path, monkeypatch):
    out = tmp_path / "AbCd1"
    ran, finals, _ = run_trial(out, "AbCd1", FIRST, monkeypatch)
    assert ran == 1 and len(finals) == 1
    record = (out / "trial.json").read_text()
    # NNI re-runs the trial with what its record says it was given: here another trial's parameters
    ran, finals, said = run_trial(out, "AbCd1", OTHER, monkeypatch)
    assert ran == 0 and finals == []
    assert (out / "trial.json").read_text() == record            # its own record of what it trained is kept
    lines = said.strip().splitlines()
    assert len(lines) == 1 and "reported its final result already" in lines[0]
    assert params_digest(OTHER) in lines[0] and params_digest(FIRST) in lines[0]
    # with the same parameters (NNI paired them right) the same: one line, no second result
    ran, finals, said = run_trial(out, "AbCd1", FIRST, monkeypatch)
    assert ran == 0 and finals == [] and "now sends" not in said


def test_another_trials_marker_in_a_shared_folder_does_not_stop_a_trial(tmp_path, monkeypatch):
    out = tmp_path / "shared"                      # an --output-dir every trial of an experiment was given
    run_trial(out, "AbCd1", FIRST, monkeypatch)
    ran, finals, _ = run_trial(out, "XyZ92", FIRST, monkeypatch)
    assert ran == 1 and len(finals) == 1
    assert json.loads((out / "final_reported.json").read_text())["trial_id"] == "XyZ92"
