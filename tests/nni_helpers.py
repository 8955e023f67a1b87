"""Helpers for tests that run real NNI experiments: a free port, `nnictl create`/`stop`, and polling the REST API.

An experiment runs as `nnictl create --config X --port P` in an environment the test builds (data paths, a private
HOME so nnictl's experiment registry stays in tmp_path); `running_experiment` always stops it by its own id.

    with running_experiment(config_path, env) as exp:
        trials = exp.wait_for_trials(4, timeout=180)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import yaml

from experiments.launch import secure
from experiments.launch.check import dispatcher_error
from experiments.results.export import END_STATES as FINISHED
from trial import REPO

# the experiment statuses after which its tuner sends no more trials (NNI 3.0's nnimanager: a grid search that has run
# out stays in TUNER_NO_MORE_TRIAL; maxTrialNumber reached gives NO_MORE_TRIAL, then DONE)
NO_MORE = ("TUNER_NO_MORE_TRIAL", "NO_MORE_TRIAL", "DONE")


def nnictl_path() -> str | None:
    """The nnictl beside this interpreter (the project's virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "nnictl"
    return str(beside) if beside.exists() else shutil.which("nnictl")


def free_port() -> int:
    """A port free on 127.0.0.1 whose successor is free too (NNI may use port + 1 for trial traffic)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports found")


def experiment_env(tmp_path: Path, data_root: Path, protect: bool = True, **extra: str) -> dict[str, str]:
    """The environment of the nnictl process; local trials inherit it (NNI's trial keeper spawns them with it).
    `protect`: the manager listens on 127.0.0.1 only, as experiments.secure starts it (False: NNI's own default)."""
    env = secure.nni_env() if protect else secure.unprotected_env()
    env.update({
        "CNNSEARCH_DATA": str(data_root),
        "CNNSEARCH_CACHE": str(tmp_path / "cache"),
        "CNNSEARCH_NO_DOWNLOAD": "1",
        # nnictl keeps its experiment registry in ~/nni-experiments/.experiment: keep it in tmp_path
        "HOME": str(tmp_path / "home"),
        # trials run `python -m trial`: make it this interpreter, with torch and nni
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        # two trials share 2 cores: one torch thread each (extra threads make tiny batches many times slower)
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def own_record(exp: RunningExperiment, trial: dict) -> dict:
    """What a trial received and trained with: its own trial.json (trial/adapter.py writes it)."""
    return json.loads((exp.trial_dir(trial) / "trial.json").read_text())


def recorded_parameters(trial: dict) -> dict:
    """The parameter record NNI holds for a trial (REST trial-jobs: what the dashboard shows)."""
    return json.loads(trial["hyperParameters"][0])


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def config_from(shipped: str, tmp_path: Path, **overrides) -> dict:
    """A shipped nni_configs/ YAML made runnable from tmp_path: paths absolute, the working directory (experiment
    folders, logs, database) in tmp_path, then `overrides` (top-level keys) applied."""
    folder = REPO / "nni_configs"
    config = yaml.safe_load((folder / shipped).read_text())
    config["searchSpaceFile"] = str((folder / config["searchSpaceFile"]).resolve())
    config["trialCodeDirectory"] = str((folder / config["trialCodeDirectory"]).resolve())
    if "codeDirectory" in config["tuner"]:
        config["tuner"]["codeDirectory"] = str((folder / config["tuner"]["codeDirectory"]).resolve())
    config["experimentWorkingDirectory"] = str(tmp_path / "nni-experiments")
    config.update(overrides)
    return config


def rest(port: int, path: str, timeout: float = 10):
    url = f"http://127.0.0.1:{port}/api/v1/nni/{path.lstrip('/')}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "null")


def wait_until(check: Callable[[], object], timeout: float, poll: float = 1.0, what: str = "condition"):
    """Call `check` until it returns something truthy (returned) or `timeout` seconds pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as err:
            last_error = err
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_error})"
                                                                                 if last_error else ""))


class RunningExperiment:
    """One experiment started by `nnictl create`: its id, port, folders and REST queries."""

    def __init__(self, exp_id: str, port: int, workdir: Path):
        self.id, self.port, self.workdir = exp_id, port, workdir

    @property
    def root(self) -> Path:
        return self.workdir / self.id

    def get(self, path: str):
        return rest(self.port, path)

    def status(self) -> dict:
        return self.get("check-status")

    def trials(self) -> list[dict]:
        return self.get("trial-jobs")

    def metrics(self, trial_id: str | None = None) -> list[dict]:
        return self.get(f"metric-data/{trial_id}" if trial_id else "metric-data")

    def check_healthy(self) -> None:
        """Fail fast: an ERROR status, or a tuner that died (NNI then still reports RUNNING, with no new trials)."""
        status = self.status()
        tuner_died = dispatcher_error(self.id, self.workdir)
        if status.get("status") == "ERROR" or status.get("errors") or tuner_died:
            raise AssertionError(f"experiment {self.id} failed: {status}\n{self.logs()}")

    def wait_for_trials(self, count: int, timeout: float, tuner_done: bool = False) -> list[dict]:
        """Wait until `count` trials exist and all of them have finished; returns them. With `tuner_done`, wait too
        for the tuner to have said it has no more (status TUNER_NO_MORE_TRIAL, or the end of the experiment): every
        trial it will ever ask for then exists, and the caller's count of them is final."""
        def done():
            self.check_healthy()
            over = not tuner_done or self.status()["status"] in NO_MORE
            trials = self.trials()
            if over and len(trials) >= count and all(t["status"] in FINISHED for t in trials):
                return trials
            return None
        return wait_until(done, timeout, what=f"{count} finished trials in experiment {self.id}"
                          + (" and its tuner done" if tuner_done else ""))

    def trial_dir(self, trial: dict) -> Path:
        """A trial's folder (NNI_OUTPUT_DIR, where the trial writes trial.json): its REST `logPath`."""
        path = Path(trial["logPath"].split(":", 1)[-1] if trial["logPath"].startswith("file:") else trial["logPath"])
        if not path.is_dir():
            raise FileNotFoundError(f"no folder for trial {trial['trialJobId']} at {path}")
        return path

    def generated_parameters(self) -> dict[str, dict]:
        """parameter_id -> parameters, as the tuner generated them.

        The tuner's answer is one JSON record {parameter_id, parameters}; NNI's database stores it whole in the first
        event of the trial it was submitted with. Which trial then *receives* it is another matter (the local
        training service hands parameters out first come, first served), but the id-parameters pair is the tuner's.
        """
        db = self.root / "db" / "nni.sqlite"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("select data from TrialJobEvent where data is not null").fetchall()
        finally:
            conn.close()
        out = {}
        for (data,) in rows:
            record = json.loads(data)
            if isinstance(record, dict) and "parameter_id" in record:
                out[str(record["parameter_id"])] = record["parameters"]
        return out

    def delivered_parameters(self) -> dict[str, dict]:
        """trial id -> the parameter record NNI's local training service sent to that trial, from the manager's log
        ("Trial parameter: <trial> <record>"): what each trial received, whatever NNI recorded for it elsewhere."""
        out = {}
        for line in (self.root / "log" / "nnimanager.log").read_text(errors="replace").splitlines():
            match = _DELIVERED.search(line)
            if match:
                out[match.group(1)] = json.loads(match.group(2))
        return out

    def final_and_intermediate(self, trial_id: str) -> tuple[list[dict], list[dict]]:
        """The trial's FINAL and PERIODICAL metric records, each with its value decoded into `value`."""
        finals, periodical = [], []
        for record in self.metrics(trial_id):
            value = json.loads(record["data"])
            while isinstance(value, str):            # NNI stores the reported dict as a JSON string, twice
                value = json.loads(value)
            record = {**record, "value": value}
            (finals if record["type"] == "FINAL" else periodical).append(record)
        return finals, sorted(periodical, key=lambda r: r["sequence"])

    def logs(self, tail: int = 60) -> str:
        text = []
        for name in ("nnimanager.log", "dispatcher.log", "nnictl_stderr.log"):
            f = self.root / "log" / name
            if f.exists():
                text.append(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-tail:]))
        return "\n".join(text)


_ID_PATTERN = re.compile(r"Experiment ID:\s*([A-Za-z0-9]+)", re.IGNORECASE)
_DELIVERED = re.compile(r"\(LocalV3\.local\) Trial parameter: (\S+) (\{.*\})\s*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def processes_with(env_entry: str) -> list[int]:
    """Pids of processes whose environment holds `env_entry` (NAME=value): the manager, tuner and trials of an
    experiment started with that environment."""
    needle = env_entry.encode() + b"\0"
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes() + b"\0":
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    return pids


@contextmanager
def running_experiment(config_path: Path, env: dict[str, str], port: int | None = None, start_timeout: float = 90):
    """`nnictl create` the experiment, wait for its REST API, yield it, and always `nnictl stop` it by its id.

    On a normal exit it also checks that nothing started with `env` (manager, tuner, trials) outlives the stop."""
    nnictl = nnictl_path()
    if nnictl is None:
        raise RuntimeError("nnictl not found")
    port = port or free_port()
    config = yaml.safe_load(Path(config_path).read_text())
    workdir = Path(config["experimentWorkingDirectory"])
    exp_id = None
    try:
        proc = subprocess.run([nnictl, "create", "--config", str(config_path), "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=start_timeout)
        output = _ANSI.sub("", proc.stdout + proc.stderr)
        match = _ID_PATTERN.search(output)
        exp_id = match.group(1) if match else None
        if exp_id is None:
            # nnictl may have started the manager and failed later: ask the port which experiment it serves
            try:
                exp_id = rest(port, "experiment", timeout=3).get("id")
            except (urllib.error.URLError, OSError):
                pass
        if proc.returncode != 0 or exp_id is None:
            raise RuntimeError(f"nnictl create failed (rc {proc.returncode}):\n{output}")
        wait_until(lambda: rest(port, "check-status", timeout=3), 30, 0.5, "the REST API")
        yield RunningExperiment(exp_id, port, workdir)
    finally:
        if exp_id is not None:
            subprocess.run([nnictl, "stop", exp_id], env=env, capture_output=True, text=True, timeout=60)
    marker = f"HOME={env['HOME']}"
    try:
        wait_until(lambda: not processes_with(marker), 30, 0.5, "the experiment's processes to exit")
    except TimeoutError:
        raise AssertionError(f"processes of experiment {exp_id} still run after `nnictl stop`: "
                             f"{processes_with(marker)}") from None


def bare_python(folder: Path) -> Path:
    """The interpreter of a virtualenv without packages (no torch, no nni) in `folder`, made once (no pip: fast)."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True,
                       timeout=120)
    return python
