"""Run a real local NNI experiment to its end from Python (nni.experiment.Experiment) and read its trials back.

Used by the benchmark and the search-efficiency study. The experiment's folders go to `workdir`; it is always
stopped by its own handle. Its dashboard and REST API listen on 127.0.0.1 only (launch/secure.py). NNI's
Experiment.start returns once the manager answers, also when the manager shuts itself down seconds later (a GPU
asked for where there is none) or its tuner dies at once: `run` waits until the training service has initialised
and the tuner has sent a trial (launch/health.py), and raises ExperimentError with NNI's own error otherwise.
"""
from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from trial import REPO
from trial.search_space import validate

from ..results.export import END_STATES, load_experiment
from . import health, secure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExperimentError(RuntimeError):
    """NNI reported the experiment itself failed (e.g. its tuner did not start, its manager found no GPU); the
    message carries NNI's error, in one line with the fix where known."""


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{path}", timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def trial_statuses(port: int) -> list[str]:
    # REST, not Experiment.list_trial_jobs(): NNI 3.0's TrialJob cannot parse Hyperband's parameter records
    return [t["status"] for t in _get(port, "trial-jobs") or []]


def run(name: str, trial_command: str, search_space: dict, tuner: dict, workdir: str | Path, max_trials: int,
        concurrency: int = 2, duration_s: float | None = None, assessor: dict | None = None,
        on_poll: Callable[[int], None] | None = None, gpus: int | None = None,
        start_timeout: float = health.START_S) -> tuple[str, float, pd.DataFrame]:
    """Start, wait until `max_trials` trials ended or `duration_s` passed (running trials are then stopped with the
    experiment), stop; returns (experiment id, wall seconds, the trial table of results.export). `tuner` and
    `assessor` are NNI algorithm specs ({"name": ...} or {"code_directory", "class_name", "class_args"}; see
    experiments.tuners); `on_poll(port)` is called at every poll (twice a second) while it runs; `gpus`: NNI's
    trialGpuNumber (local service, busy GPUs not used). Raises SearchSpaceError for a space NNI's tuners cannot take,
    ExperimentError when the experiment did not start within `start_timeout` seconds (see the module docstring) or
    NNI reports it failed, TimeoutError when `max_trials` did not end in time without a `duration_s`."""
    from nni.experiment import AlgorithmConfig, CustomAlgorithmConfig, Experiment
    validate(search_space)    # SearchSpaceError (one line) rather than an experiment whose tuner dies

    def algorithm(spec: dict):
        return (CustomAlgorithmConfig if "class_name" in spec else AlgorithmConfig)(**spec)

    exp = Experiment("local")
    exp.config.experiment_name = name
    exp.config.trial_command = trial_command
    exp.config.trial_code_directory = str(REPO)
    exp.config.search_space = search_space
    exp.config.tuner = algorithm(tuner)
    if assessor:
        exp.config.assessor = algorithm(assessor)
    exp.config.max_trial_number = max_trials
    exp.config.trial_concurrency = concurrency
    exp.config.experiment_working_directory = str(workdir)
    if gpus is not None:
        exp.config.trial_gpu_number = gpus
        exp.config.training_service.use_active_gpu = False
    port = free_port()
    t0 = time.time()
    try:
        try:
            with secure.protected():      # Experiment.start runs NNI's node manager with this process's environment
                exp.start(port, debug=False)
        except RuntimeError as err:       # e.g. "Port P is not idle", from nni/experiment/launcher.py
            raise ExperimentError(f"experiment {name} was not started: "
                                  f"{health.with_fix(' '.join(str(err).split()))}") from None
        proc = getattr(exp, "_proc", None)
        error = health.wait_started(exp.id, port, Path(workdir), pid=getattr(proc, "pid", None),
                                    timeout=start_timeout)
        if error:
            raise ExperimentError(f"experiment {name} ({exp.id}) did not start: {error}; its logs: "
                                  f"{Path(workdir) / exp.id / 'log'}")
        limit = duration_s if duration_s else 120.0 * max_trials
        while time.time() - t0 < limit:
            status = _get(port, "check-status")
            if status.get("status") == "ERROR":
                # e.g. "Tuner did not connect in 10 seconds": NNI gives a tuner 10 s to start, too few on a busy CPU
                raise ExperimentError(f"experiment {name} failed: {status.get('errors')}")
            if on_poll is not None:
                on_poll(port)
            statuses = trial_statuses(port)
            if len(statuses) >= max_trials and all(s in END_STATES for s in statuses):
                break
            time.sleep(0.5)
        else:
            if not duration_s:
                raise TimeoutError(f"experiment {name} did not finish {max_trials} trials in {limit:.0f} s")
        wall = time.time() - t0
        exp_id = exp.id
    finally:
        _stop(exp)
    return exp_id, wall, load_experiment(Path(workdir) / exp_id)[1]


def run_retrying(*args, log: str = "local", **kwargs) -> tuple[str, float, pd.DataFrame]:
    """run(), once more when the experiment did not start (NNI gives a tuner 10 s to connect, too few on a busy CPU):
    one stderr line `[log] <the error>; trying once more`; ExperimentError the second time. Same arguments as run."""
    try:
        return run(*args, **kwargs)
    except ExperimentError as err:
        print(f"[{log}] {err}; trying once more", file=sys.stderr)
        return run(*args, **kwargs)


def _stop(exp) -> None:
    """Stop by its own handle. A manager that already exited (it shut itself down) is not asked over REST: NNI would
    log a traceback for the refused request before it gives up."""
    proc = getattr(exp, "_proc", None)
    if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
        exp._proc = None
    exp.stop()
