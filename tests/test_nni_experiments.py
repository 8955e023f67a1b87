"""Real NNI experiments (nnictl, the NNI manager, its tuners and the local training service; no mocks) on tiny data.

Each test writes tiny datasets into tmp_path, derives an experiment YAML from a shipped nni_configs/ file (or writes
one), starts it with `nnictl create --port P`, polls the REST API until its trials have finished, checks them against
each trial's own record (trial.json in its output folder), and always stops the experiment by its id. Experiment
folders and nnictl's registry stay in tmp_path. About 2.5-3 minutes on a busy 2-core CPU.

    .venv/bin/pytest tests/test_nni_experiments.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests import tiny_data
from tests.nni_helpers import (
    config_from,
    experiment_env,
    nnictl_path,
    own_record,
    recorded_parameters,
    running_experiment,
    write_config,
)
from trial.config import params_digest

pytestmark = [pytest.mark.nni,
              pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed (pip install -r requirements.txt)")]

TINY = "--epochs 2 --train_subset 256 --val_size 128 --batch_size 64"   # later flags win over the shipped ones
TINY_DATA_TRAIN = 600                                                   # tiny_data.write_all's training images
WAIT = 240                                                              # seconds for the trials to finish


@pytest.fixture
def env(tmp_path):
    """nnictl's environment: tiny data, a private cache, no downloads. Local trials inherit it."""
    root = tiny_data.write_all(tmp_path / "data", n_train=TINY_DATA_TRAIN)
    return experiment_env(tmp_path, root)


@pytest.mark.timeout(WAIT + 60, method="signal")
def test_tpe_trials_report_and_prove_their_parameters(tmp_path, env):
    # the shipped MNIST config with tiny flags; Medianstop is kept but may only act after the last epoch
    config = config_from("mnist.yml", tmp_path, maxTrialNumber=4, maxExperimentDuration="6m")
    config["trialCommand"] += f" {TINY}"
    config["assessor"]["classArgs"]["start_step"] = 3
    path = write_config(tmp_path / "tpe.yml", config)

    with running_experiment(path, env) as exp:
        trials = exp.wait_for_trials(4, timeout=WAIT)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 4, exp.logs()
        generated, delivered = exp.generated_parameters(), exp.delivered_parameters()
        mispaired = 0
        for trial in trials:
            own = own_record(exp, trial)
            digest = params_digest(own["sampled_params"])
            assert own["params_digest"] == digest and own["trial_id"] == trial["trialJobId"]

            finals, periodical = exp.final_and_intermediate(trial["trialJobId"])
            assert len(finals) == 1, finals
            assert [r["value"]["epoch"] for r in periodical] == [1, 2]          # one report per epoch
            assert all(0.0 <= r["value"]["default"] <= 1.0 for r in periodical)
            final = finals[0]["value"]
            # the trial's proof: the digest of what it trained with, and the parameter id it was given
            assert final["params_digest"] == int(digest, 16)
            assert final["parameter_id"] == own["parameter_id"] == int(finals[0]["parameterId"])
            # ... equals what the tuner generated under that id, and what NNI's log says it sent to this trial
            assert params_digest(generated[str(own["parameter_id"])]) == digest
            assert delivered[trial["trialJobId"]]["parameter_id"] == own["parameter_id"]
            assert params_digest(delivered[trial["trialJobId"]]["parameters"]) == digest
            # NNI 3.0's own per-trial record can name another parameter set under concurrency; pairing.js (loaded by
            # experiment_env, as by experiments.secure) makes it the trial's own
            if params_digest(recorded_parameters(trial)["parameters"]) != digest:
                mispaired += 1

            saved = json.loads((exp.trial_dir(trial) / "config.json").read_text())
            assert (saved["epochs"], saved["train_subset"], saved["val_size"]) == (2, 256, 128)
        assert sorted(own_record(exp, t)["parameter_id"] for t in trials) == [0, 1, 2, 3]
        assert mispaired == 0, f"{mispaired} of {len(trials)} trials mis-paired in NNI's record (pairing.js)"

    # the trials saw nnictl's environment: they decoded the tiny data into the private cache
    cached = list((tmp_path / "cache").glob("mnist-*.pt"))
    assert len(cached) == 1, "trials did not use CNNSEARCH_CACHE from nnictl's environment"
    assert len(torch.load(cached[0], weights_only=True)["train_x"]) == TINY_DATA_TRAIN


@pytest.mark.timeout(WAIT + 60, method="signal")
def test_fixed_hyperband_runs_to_its_end_with_budgets_as_epochs(tmp_path, env):
    # R = 3, eta = 3 is one iteration of 6 trials: bracket 0-1 runs 3 configs for 1 epoch and the best for 3, bracket
    # 0-0 runs 2 configs for 3 epochs. The trial command keeps the shipped one (no --epochs) plus tiny data flags.
    config = config_from("mnist_hyperband.yml", tmp_path, maxTrialNumber=6, maxExperimentDuration="6m")
    config["tuner"]["classArgs"].update(R=3, eta=3)
    config["trialCommand"] += " --train_subset 256 --val_size 128 --batch_size 64"
    path = write_config(tmp_path / "hyperband.yml", config)

    with running_experiment(path, env) as exp:
        trials = exp.wait_for_trials(6, timeout=WAIT)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 6, exp.logs()
        exp.check_healthy()     # the built-in advisor's traceback would be in dispatcher.log
        generated, delivered = exp.generated_parameters(), exp.delivered_parameters()
        by_id, resumed, mispaired = {}, {}, 0
        for trial in trials:
            own = own_record(exp, trial)
            budget = own["sampled_params"]["TRIAL_BUDGET"]
            finals, periodical = exp.final_and_intermediate(trial["trialJobId"])
            assert len(finals) == 1
            final = finals[0]["value"]
            assert budget in (1, 3)
            assert final["epochs_run"] == len(periodical) == budget           # the budget is the epochs
            assert final["params_digest"] == int(params_digest(own["sampled_params"]), 16)
            assert finals[0]["parameterId"] == own["parameter_id"]             # ids like '0-1_0_2'
            assert params_digest(generated[own["parameter_id"]]) == own["params_digest"]
            assert delivered[trial["trialJobId"]]["parameter_id"] == own["parameter_id"]
            if params_digest(recorded_parameters(trial)["parameters"]) != own["params_digest"]:
                mispaired += 1
            by_id[own["parameter_id"]] = (own["sampled_params"], final["default"])
            resumed[own["parameter_id"]] = final["resumed_from_epoch"]
        assert {params["TRIAL_BUDGET"] for params, _ in by_id.values()} == {1, 3}
        # a promoted configuration ('<bracket>_1_<n>') is round 0's '<bracket>_0_<n>' with a larger budget, the best
        for pid, (params, _) in by_id.items():
            bracket, round_, serial = pid.split("_")
            if round_ == "1":
                first, _ = by_id[f"{bracket}_0_{serial}"]
                assert {**first, "TRIAL_BUDGET": params["TRIAL_BUDGET"]} == params
                round0 = [acc for p, (_, acc) in by_id.items() if p.startswith(f"{bracket}_0_")]
                assert by_id[f"{bracket}_0_{serial}"][1] == max(round0)
                # and it continued from its 1-epoch run's state instead of training again from epoch 0
                assert resumed[pid] == first["TRIAL_BUDGET"] == 1
            else:
                assert resumed[pid] == 0
        wait_status = exp.status()["status"]
        assert wait_status in ("NO_MORE_TRIAL", "DONE"), wait_status   # maxTrialNumber ends it
        assert mispaired == 0, f"{mispaired} of {len(trials)} trials mis-paired in NNI's record (pairing.js)"


@pytest.mark.timeout(WAIT + 60, method="signal")
def test_grid_search_runs_the_whole_grid(tmp_path, env):
    # the shipped baseline (deep_cnn over 5 seeds), capped above the grid so the grid itself ends the experiment
    config = config_from("mnist_baseline.yml", tmp_path, maxTrialNumber=10, maxExperimentDuration="6m")
    config["trialCommand"] += f" {TINY}"
    path = write_config(tmp_path / "grid.yml", config)

    with running_experiment(path, env) as exp:
        trials = exp.wait_for_trials(5, timeout=WAIT, tuner_done=True)
        # NNI 3.0 leaves a finished grid in TUNER_NO_MORE_TRIAL, never DONE: the count says it is over
        assert len(trials) == 5, [t["trialJobId"] for t in trials]
        assert exp.status()["status"] == "TUNER_NO_MORE_TRIAL"
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 5, exp.logs()
        seeds = []
        for trial in trials:
            own = own_record(exp, trial)
            saved = json.loads((exp.trial_dir(trial) / "config.json").read_text())
            # --params baselines/deep_cnn.json was found: trials run in trialCodeDirectory
            assert (saved["conv_layers"], saved["convs_per_block"], saved["filters_3"]) == (3, 2, 128)
            assert saved["seed"] == own["sampled_params"]["seed"]
            seeds.append(saved["seed"])
        assert sorted(seeds) == [0, 1, 2, 3, 4]


@pytest.mark.timeout(WAIT + 60, method="signal")
def test_a_trial_with_an_invalid_parameter_fails_and_the_experiment_goes_on(tmp_path, env):
    # one branch of the space holds a key the trial does not know; GridSearch visits branches in the listed order
    space = {"variant": {"_type": "choice", "_value": [
        {"_name": "bad", "no_such_param": {"_type": "choice", "_value": [1]}},
        {"_name": "small", "filters": {"_type": "choice", "_value": [8]}},
        {"_name": "larger", "filters": {"_type": "choice", "_value": [16]}},
    ]}}
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(space))
    config = {
        "searchSpaceFile": str(space_file),
        "trialCommand": f"python -m trial --dataset mnist {TINY}",
        "trialCodeDirectory": str(Path(__file__).resolve().parent.parent),
        "trialConcurrency": 1,
        "maxTrialNumber": 10,
        "maxExperimentDuration": "6m",
        "experimentWorkingDirectory": str(tmp_path / "nni-experiments"),
        "tuner": {"name": "GridSearch"},
        "trainingService": {"platform": "local"},
    }
    path = write_config(tmp_path / "invalid.yml", config)

    with running_experiment(path, env) as exp:
        trials = exp.wait_for_trials(3, timeout=WAIT, tuner_done=True)
        assert len(trials) == 3
        failed = [t for t in trials if t["status"] == "FAILED"]
        succeeded = [t for t in trials if t["status"] == "SUCCEEDED"]
        assert len(failed) == 1 and len(succeeded) == 2, [(t["trialJobId"], t["status"]) for t in trials]
        stderr = (exp.trial_dir(failed[0]) / "trial.stderr").read_text()
        assert "unknown parameter 'no_such_param'" in stderr, stderr
        assert not exp.final_and_intermediate(failed[0]["trialJobId"])[0]     # no final metric
        # the experiment went on: trials started after the failure, and it is not in ERROR
        assert any(t["startTime"] >= failed[0]["endTime"] for t in succeeded)
        assert exp.status()["status"] != "ERROR"
        for trial in succeeded:
            assert own_record(exp, trial)["sampled_params"]["variant"]["_name"] in ("small", "larger")
