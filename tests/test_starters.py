"""The starters, for real: an experiment is said to run only once NNI's manager answers and its training service has
initialised; otherwise NNI's own error in one line, the experiment stopped by its id, a non-zero exit, and no process
left. `python -m experiments.check --experiment ID` tells a live experiment from a dead one and names the trials'
errors. Cases: a GPU config on a machine without one (refused by the pre-flight; started anyway through the secure
starter and through the Python API), a port held by a socket, trials whose `python` lacks torch, a manager killed by
its pid, an SSH worker nobody answers for (the remote launcher).

    .venv/bin/pytest tests/test_starters.py -q
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from experiments.launch.check import _visible_gpus
from experiments.launch.health import process_alive
from tests import tiny_data
from tests.nni_helpers import (
    bare_python,
    config_from,
    experiment_env,
    free_port,
    nnictl_path,
    processes_with,
    rest,
    wait_until,
    write_config,
)
from trial import REPO

pytestmark = [pytest.mark.nni, pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")]
COMMAND = "python -m trial --dataset mnist --epochs 1 --train_subset 256 --val_size 128 --threads 1"
has_gpu = pytest.mark.skipif(_visible_gpus()[0] > 0, reason="a machine with a GPU: the case is one without")


def _tiny(tmp_path: Path, name: str = "exp.yml", **overrides) -> Path:
    config = config_from("mnist_random.yml", tmp_path, maxTrialNumber=1, trialConcurrency=1, trialCommand=COMMAND)
    config.pop("maxExperimentDuration", None)
    config.update(overrides)
    return write_config(tmp_path / name, config)


def _secure(env: dict, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.secure", "nnictl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)


def _health(env: dict, exp_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.check", "--experiment", exp_id], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _registry(env: dict) -> dict:
    path = Path(env["HOME"]) / "nni-experiments" / ".experiment"
    return json.loads(path.read_text()) if path.exists() else {}


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _nothing_left(env: dict) -> None:
    """No experiment RUNNING in the registry, no process started with this test's HOME (manager, tuner, trials)."""
    assert not [k for k, v in _registry(env).items() if v.get("status") == "RUNNING"], _registry(env)
    wait_until(lambda: not processes_with(f"HOME={env['HOME']}"), 60, 0.5, "the experiment's processes to exit")


def _clean_up(env: dict) -> None:
    """Stop what this test started by its id, then kill by pid whatever it started that still runs."""
    for exp_id, entry in _registry(env).items():
        if entry.get("status") == "RUNNING":
            subprocess.run([nnictl_path(), "stop", exp_id], env=env, capture_output=True, timeout=120)
    for pid in processes_with(f"HOME={env['HOME']}"):
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def env(tmp_path):
    env = experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))
    yield env
    _clean_up(env)


@has_gpu
def test_a_gpu_config_without_a_gpu_is_refused_or_said_not_started(tmp_path, env):
    """NNI 3.0 prints the dashboard address and exits 0, and its manager shuts itself down seconds later ("Failed to
    collect GPU info ... NVML Shared Library Not Found"). The pre-flight refuses it; started anyway, the starter says
    it did not start, with NNI's error, and nothing is left running."""
    config = _tiny(tmp_path, trialGpuNumber=1, trainingService={"platform": "local", "useActiveGpu": False})
    proc = _secure(env, "create", "--config", str(config), "--port", str(free_port()))
    errors = _errors(proc)
    assert proc.returncode == 2 and len(errors) == 2, proc.stdout + proc.stderr
    assert "asks for a GPU, but this machine has none" in errors[0] and "not started" in errors[1]
    assert _registry(env) == {}

    proc = _secure(env, "create", "--config", str(config), "--port", str(free_port()), "--no-check")
    errors = _errors(proc)
    assert proc.returncode == 3 and len(errors) == 1, proc.stdout + proc.stderr
    (exp_id,) = _registry(env)
    assert f"experiment {exp_id} did not start: NNI's manager shut itself down" in errors[0]
    assert "NVML Shared Library Not Found" in errors[0] and "remove trialGpuNumber" in errors[0]
    assert "Web portal URLs" not in proc.stdout and "is running" not in proc.stderr
    _nothing_left(env)
    health = _health(env, exp_id)
    assert health.returncode == 1 and "NOT running" in health.stderr and "NVML" in health.stderr, health.stderr


@has_gpu
def test_the_python_api_says_a_gpu_config_did_not_start(tmp_path, env):
    """experiments.launch.local (nni.experiment.Experiment, no pre-flight): ExperimentError with NNI's error, the
    manager stopped. Run in a child process: NNI keeps its registry under the HOME it was imported with."""
    script = textwrap.dedent(f"""
        import sys
        from experiments.launch import local
        try:
            local.run("gpu", {COMMAND!r}, {{"learning_rate": {{"_type": "choice", "_value": [0.01]}}}},
                      {{"name": "Random"}}, {str(tmp_path / "nni-experiments")!r}, max_trials=1, concurrency=1, gpus=1)
        except local.ExperimentError as err:
            print("ExperimentError:", err)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("ExperimentError:")]
    assert "did not start: NNI's manager shut itself down" in line and "NVML Shared Library Not Found" in line
    _nothing_left(env)


def test_a_taken_port_is_one_line(tmp_path, env):
    config = _tiny(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = _secure(env, "create", "--config", str(config), "--port", str(port))
        errors = _errors(proc)
        assert proc.returncode == 2 and len(errors) == 2, proc.stdout + proc.stderr
        assert f"port {port} is taken" in errors[0] and "not started" in errors[1]
        # past the pre-flight, nnictl's own failure (a 15-line traceback ending "Port P is not idle"): one line
        proc = _secure(env, "create", "--config", str(config), "--port", str(port), "--no-check")
    errors = _errors(proc)
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout + proc.stderr
    assert errors[0] == (f"error: the experiment was not started: port {port} is taken: pick another --port (NNI "
                         f"needs it free, and for a remote experiment {port + 1} too)")
    assert "Traceback" not in proc.stdout + proc.stderr and "Web portal" not in proc.stdout
    _nothing_left(env)


def test_started_means_running_and_a_killed_manager_is_found(tmp_path, env):
    """Reported running only when it runs; `experiments.check --experiment ID` says it is alive; after its manager is
    killed by its pid (NNI's registry still says RUNNING), it says it is not, exit status 1."""
    port = free_port()
    proc = _secure(env, "create", "--config", str(_tiny(tmp_path, maxTrialNumber=2)), "--port", str(port))
    (exp_id,) = _registry(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"experiment {exp_id} is running: dashboard and REST API on http://127.0.0.1:{port} only" in proc.stderr
    assert rest(port, "check-status")["status"] in ("RUNNING", "NO_MORE_TRIAL", "DONE")
    log = (tmp_path / "nni-experiments" / exp_id / "log" / "nnimanager.log").read_text()
    assert "(LocalV3.local) Register directory trial_code" in log          # the training service had initialised
    portal = [line for line in proc.stdout.splitlines() if "Web portal URLs" in line]
    assert portal and all("127.0.0.1" in url for url in portal[0].split("URLs:")[1].split())
    assert f'nnictl stop {exp_id}"' in proc.stdout and "nnictl stop --" not in proc.stdout

    alive = _health(env, exp_id)
    assert alive.returncode == 0 and f"experiment {exp_id}: alive" in alive.stdout, alive.stdout + alive.stderr
    pid = _registry(env)[exp_id]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), 30, 0.5, "the manager to die")
    assert _registry(env)[exp_id]["status"] == "RUNNING"                   # NNI's own record does not know
    dead = _health(env, exp_id)
    assert dead.returncode == 1, dead.stdout + dead.stderr
    assert f"experiment {exp_id}: NOT running" in dead.stderr and f"its manager (pid {pid}) is gone" in dead.stderr


def test_trials_whose_python_lacks_torch_are_named_by_the_health_check(tmp_path, env):
    """Started past the pre-flight (which refuses it: tests/test_preflight.py) with trials run by an interpreter
    without torch: the manager runs, every trial fails, and the health check names the trials' error and the fix."""
    bare = bare_python(tmp_path / "bare")
    config = _tiny(tmp_path, trialCommand=COMMAND.replace("python", str(bare), 1))
    port = free_port()
    proc = _secure(env, "create", "--config", str(config), "--port", str(port), "--no-check")
    (exp_id,) = _registry(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_until(lambda: [t for t in rest(port, "trial-jobs") if t["status"] == "FAILED"], 120, 1, "a failed trial")
    health = _health(env, exp_id)
    assert health.returncode == 1, health.stdout + health.stderr
    (line,) = [line for line in health.stderr.splitlines() if line.startswith("error: trials ")]
    assert "ModuleNotFoundError: No module named 'torch'" in line and "lacks the requirements" in line
    subprocess.run([nnictl_path(), "stop", exp_id], env=env, capture_output=True, timeout=120)
    _nothing_left(env)


def test_resuming_an_unknown_experiment_is_one_line(env):
    proc = _secure(env, "resume", "nosuchid", "--port", str(free_port()))
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert _errors(proc) == ["error: the experiment was not started: no experiment nosuchid in this user's nnictl "
                             "registry (~/nni-experiments/.experiment; `nnictl experiment list --all` lists them)"]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) is not installed")
def test_the_remote_launcher_says_a_worker_nobody_answers_for_did_not_start(tmp_path, env):
    """A worker whose SSH port is closed: NNI's manager shuts down seconds after nnictl said it started; the SSH
    launcher prints the manager's error with the fix, stops the experiment, exits non-zero, prints no address."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    with socket.socket() as s:        # a port on 127.0.0.2 where nothing listens
        s.bind(("127.0.0.2", 0))
        closed = s.getsockname()[1]
    workers = tmp_path / "workers.yml"
    workers.write_text(yaml.safe_dump({"manager_ip": "127.0.0.1", "workers": [
        {"host": "127.0.0.2", "port": closed, "user": "nobody", "key_file": str(tmp_path / "key"),
         "python": sys.executable}]}))
    proc = subprocess.run([sys.executable, "-m", "experiments.launch", str(_tiny(tmp_path)), "--workers",
                           str(workers), "--port", str(free_port()), "--start-timeout", "120"], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=400)
    errors = _errors(proc)
    assert proc.returncode == 3 and len(errors) == 1, proc.stdout + proc.stderr
    (exp_id,) = _registry(env)
    assert f"experiment {exp_id} did not start" in errors[0] and "ECONNREFUSED" in errors[0]
    assert "check host, port, user and key_file" in errors[0] and "stopped it" in errors[0]
    assert "dashboard on" not in proc.stdout
    _nothing_left(env)
