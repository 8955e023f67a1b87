"""A real remote experiment: NNI's SSH training service with two workers (one private sshd listening on 127.0.0.2 and
127.0.0.3), configured by experiments.launch. Trials run on both and every metric arrives."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests import sshd, tiny_data
from tests.nni_helpers import experiment_env, nnictl_path, running_experiment, write_config

pytestmark = [pytest.mark.ssh, pytest.mark.nni,
              pytest.mark.skipif(sshd.available() is not None or nnictl_path() is None,
                                 reason=str(sshd.available() or "nni is not installed"))]
SPACE = {"filters": {"_type": "choice", "_value": [8, 16]}, "learning_rate": {"_type": "loguniform",
                                                                              "_value": [1e-3, 1e-2]}}
EPOCHS = 2


@pytest.mark.timeout(600)
def test_trials_run_on_both_workers_and_report(tmp_path):
    data = tiny_data.write_all(tmp_path / "data")
    with sshd.private_sshd(tmp_path / "sshd", "127.0.0.2", also=("127.0.0.3",)) as (host, port, key):
        config = sshd.tiny_remote_config(tmp_path, data, [(h, port, key) for h in ("127.0.0.2", "127.0.0.3")],
                                         SPACE, EPOCHS, maxTrialNumber=4)
        env = experiment_env(tmp_path, data, OMP_NUM_THREADS="1")
        with running_experiment(write_config(tmp_path / "remote.yml", config), env) as exp:
            trials = exp.wait_for_trials(4, timeout=480)
            assert [t["status"] for t in trials] == ["SUCCEEDED"] * 4, exp.logs()
            for t in trials:
                finals, periodical = exp.final_and_intermediate(t["trialJobId"])
                assert len(finals) == 1 and len(periodical) == EPOCHS
                assert 0 <= finals[0]["value"]["default"] <= 1
            # each trial wrote, on its worker, which SSH address started it: both workers ran trials
            remote = Path.home() / "nni-experiments" / exp.id   # the workers' side (same machine, sshd's user)
            try:
                seen = {}
                for own in remote.glob("environments/remote-worker*/trials/*/trial.json"):
                    record = json.loads(own.read_text())
                    seen[record["trial_id"]] = record["ssh_server"]
                assert set(seen) == {t["trialJobId"] for t in trials}
                assert set(seen.values()) == {"127.0.0.2", "127.0.0.3"}
            finally:
                shutil.rmtree(remote, ignore_errors=True)
