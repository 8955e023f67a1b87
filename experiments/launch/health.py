"""Is an NNI experiment really running? What NNI's manager, REST API and logs say, read back for the starters (which
report an experiment started only once its manager answers and its training service has initialised) and for
`python -m experiments.check --experiment ID`.

NNI 3.0 keeps, under `<experimentWorkingDirectory>/<id>/`: `log/nnimanager.log` (the Node manager: training service,
GPU collector, REST server), `log/dispatcher.log` (the tuner and assessor process), `log/nnictl_stderr.log` (what the
manager printed when it crashed) and each local trial's `environments/<env>/trials/<trial>/trial.stderr`. nnictl's
registry, `~/nni-experiments/.experiment`, holds each experiment's manager pid, port, status and folder. NNI itself
says little: `nnictl create` prints the dashboard address and exits 0 a second after the manager starts, also when the
manager shuts itself down seconds later (a GPU asked for on a machine without an NVIDIA driver), and a manager killed
or crashed leaves the registry saying RUNNING.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

START_S = 60.0         # seconds a local experiment's manager gets to answer and initialise its training service
REMOTE_START_S = 180.0  # a remote one: SSH to each worker and NNI's pip install there first (about 17 s a worker)
WATCH_S = 15.0         # after that, seconds its tuner gets to send a first trial before it is taken as alive

# NNI's manager log: "[2026-12-06 03:17:19] ERROR (GpuInfoCollector) Failed to collect GPU info, ..."
_LOG_LINE = re.compile(r"^\[[^\]]+\]\s+(?P<level>[A-Z]+)\s+\((?P<module>[^)]*)\)\s?(?P<message>.*)$")
# the manager is giving up: the training service failed, a module hit a critical error, or it never started
_SHUTDOWN = re.compile(r"\) (Initiate shutdown|Starting failed|Critical error ocurred)")
# the training service has started (local: the trial keeper, GPU collector included; remote: every SSH worker)
_READY = re.compile(r"\((?:LocalV3|RemoteV3)\.[^)]*\) (?:Register|Upload) directory trial_code"
                    r"|Remote training service started")
_FIRST_TRIAL = re.compile(r"received command from dispatcher: (?:TR|NO)")
_V3 = re.compile(r"\((?:LocalV3|RemoteV3)\.")   # the training services whose readiness _READY knows
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt|Failure)\b.*|^[\w.]+\.[\w]+: .*|^error: .*", re.I)

# NNI's own words -> what to do about them (the first that matches)
FIXES = [
    (re.compile(r"NVML Shared Library Not Found|Failed to collect GPU info|nvidia-smi", re.I),
     "NNI finds no NVIDIA GPU on this machine: remove trialGpuNumber (a trial's device 'auto' still uses CUDA where "
     "there is one) or start it where `nvidia-smi` works"),
    (re.compile(r"Port (\d+) is not idle|EADDRINUSE", re.I),
     "the port is taken (NNI also needs the one after it for a remote experiment): pick another --port"),
    (re.compile(r"Tuner did not connect in \d+ seconds", re.I),
     "NNI gives the tuner 10 s to start and this machine was too busy: start it again when the CPU is less loaded"),
    (re.compile(r"Dispatcher stream error|tuner may have crashed", re.I),
     "the tuner died: its error is in log/dispatcher.log (`python -m experiments.check --experiment {id}`)"),
    (re.compile(r"Cannot find python|python_path should be", re.I),
     "set the worker's `python` in the workers file to its interpreter (python -m experiments.launch.workers check)"),
    (re.compile(r"NNI version mismatch", re.I),
     "install the manager's nni version on the worker (python -m experiments.launch.workers prepare)"),
    (re.compile(r"Cannot parse privateKey", re.I),
     "a worker's key_file is not a private key NNI's SSH client can read (an OpenSSH ed25519 or RSA key without a "
     "passphrase)"),
    (re.compile(r"Authentication|ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ssh", re.I),
     "the manager cannot reach a worker over SSH: check host, port, user and key_file "
     "(python -m experiments.launch.workers check)"),
    (re.compile(r"No module named 'trial'", re.I),
     "trialCodeDirectory does not hold the trial package: set it to the repository (relative paths are read from "
     "the YAML's own folder)"),
    (re.compile(r"No module named '(torch|nni)'", re.I),
     "the trial command's python lacks the requirements: name the virtualenv's interpreter in trialCommand, or "
     "activate the virtualenv before starting"),
]


def fix_for(message: str) -> str | None:
    """What to do about one of NNI's error lines, where we know; None otherwise."""
    return next((fix for pattern, fix in FIXES if pattern.search(message)), None)


def with_fix(message: str, experiment_id: str | None = None) -> str:
    fix = fix_for(message)
    if fix:
        fix = fix.replace("{id}", experiment_id or "ID")
    return f"{message}; {fix}" if fix else message


# ------------------------------------------------------------------------------------------------ where NNI keeps it
def registry(experiment_id: str) -> dict:
    """nnictl's record of the experiment (pid, port, status, logDir...) in ~/nni-experiments/.experiment; {} if none."""
    path = Path.home() / "nni-experiments" / ".experiment"
    try:
        return json.loads(path.read_text()).get(experiment_id) or {}
    except (OSError, ValueError):
        return {}


def experiment_root(experiment_id: str, root: str | Path | None = None) -> Path:
    """The experiment's folder: under `root` (its experimentWorkingDirectory) when given and present there, else
    where nnictl's registry says, else under ~/nni-experiments."""
    if root is not None and (Path(root).expanduser() / experiment_id).is_dir():
        return Path(root).expanduser() / experiment_id
    log_dir = registry(experiment_id).get("logDir")
    if log_dir:
        return Path(log_dir) / experiment_id
    return (Path(root).expanduser() if root is not None else Path.home() / "nni-experiments") / experiment_id


def log_size(path: Path) -> int:
    """Bytes in a log now (0 if absent): a resumed experiment appends to its logs, read what comes after."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_log(path: Path, since: int = 0) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(since if since <= path.stat().st_size else 0)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def manager_errors(text: str) -> list[str]:
    """The ERROR/CRITICAL lines of a manager log's text, as "Module: message", in order."""
    out = []
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if match and match["level"] in ("ERROR", "CRITICAL", "FATAL"):
            out.append(f"{match['module']}: {' '.join(match['message'].split())}")
    return out


def exception_line(text: str) -> str | None:
    """The error a Python (or Node) process ended with: the exception line of its last traceback, else its first
    `error:` line; None when it wrote no error."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        start = max(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)"))
        found = [line for line in lines[start + 1:] if not line.startswith((" ", "\t", "[")) and
                 _EXCEPTION.match(line)]
        return found[-1].strip() if found else lines[-1].strip()
    found = [line for line in lines if line.lower().startswith("error:") or re.match(r"^\w*Error: ", line)]
    return found[0].strip() if found else None


def trial_states(root: Path) -> dict[str, str]:
    """trial id -> its last state in NNI's database ({} when the database cannot be read)."""
    try:
        db = sqlite3.connect(f"file:{root / 'db' / 'nni.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("select trialJobId, event from TrialJobEvent order by timestamp").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return dict(rows)


def trial_errors(root: Path) -> dict[str, list[str]]:
    """Each distinct error the FAILED trials ended with (their stderr) -> those trials, first failure first. A trial
    an assessor stopped, or one still running, is not a failure (without NNI's database every stderr is read)."""
    states = trial_states(root)
    out: dict[str, list[str]] = {}
    files = list(root.glob("environments/*/trials/*/trial.stderr")) + list(root.glob("trials/*/stderr"))
    for stderr in sorted(files, key=lambda f: f.stat().st_mtime if f.exists() else 0):
        if states and states.get(stderr.parent.name) != "FAILED":
            continue
        error = exception_line(read_log(stderr)) or ("FAILED with no error in its trial.stderr" if states else None)
        if error:
            out.setdefault(error, []).append(stderr.parent.name)
    return out


# --------------------------------------------------------------------------------------------------- is it alive?
def process_alive(pid: int | None, experiment_id: str | None = None) -> bool:
    """Is `pid` a live (not zombie) process, and, given an id, NNI's manager of that experiment (pids get reused)?"""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():          # not Linux: os.kill is all there is
        return True
    try:
        if proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = proc.joinpath("cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return experiment_id is None or experiment_id.encode() in cmdline


def rest_status(port: int | None, experiment_id: str | None = None, timeout: float = 3) -> dict | None:
    """The manager's check-status answer on 127.0.0.1:port ({"status": ..., "errors": [...]}), None when nothing
    answers there, or (given an id) another experiment does."""
    if not port:
        return None
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{path}", timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        status = get("check-status")
        if experiment_id is not None and (get("experiment") or {}).get("id") not in (experiment_id, None):
            return None
        return status if isinstance(status, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def crash_output(root: Path, since: int = 0) -> str | None:
    """The last line a crashed manager printed (log/nnictl_stderr.log, after nnictl's header), if any."""
    text = read_log(root / "log" / "nnictl_stderr.log", since)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("-", "Experiment "))]
    error = exception_line("\n".join(lines))
    return error or (lines[-1] if lines else None)


# --------------------------------------------------------------------------------------------------- the starters
@dataclass
class Offsets:
    """Where each log ends before a start: a resumed experiment appends, and its earlier runs are not this start."""
    manager: int = 0
    dispatcher: int = 0
    stderr: int = 0

    @classmethod
    def of(cls, root: Path) -> Offsets:
        return cls(log_size(root / "log" / "nnimanager.log"), log_size(root / "log" / "dispatcher.log"),
                   log_size(root / "log" / "nnictl_stderr.log"))


def wait_started(experiment_id: str, port: int, root: str | Path | None = None, pid: int | None = None,
                 since: Offsets | None = None, timeout: float = START_S, watch: float = WATCH_S,
                 poll: float = 0.5) -> str | None:
    """Wait until the experiment's manager answers on its REST API, its training service has initialised and its
    tuner has sent a first trial (or `watch` seconds passed without a word from it): None. Otherwise, as soon as it
    is known or after `timeout` seconds, NNI's own error in one line, with the fix where known."""
    since = since or Offsets()
    deadline = time.monotonic() + timeout
    ready_at = shutdown_at = answered_at = None
    from .check import dispatcher_error
    while True:
        folder = experiment_root(experiment_id, root)
        text = read_log(folder / "log" / "nnimanager.log", since.manager)
        errors = manager_errors(text)
        shutdown = _SHUTDOWN.search(text)
        if shutdown:
            # the module that failed may log its error just after the shutdown line: give it a few seconds
            shutdown_at = shutdown_at or time.monotonic()
            if errors or time.monotonic() - shutdown_at > 5:
                line = text[shutdown.start() + 2:].splitlines()[0]
                return with_fix(f"NNI's manager shut itself down: {errors[0] if errors else line}", experiment_id)
            time.sleep(poll)
            continue
        tuner = dispatcher_error(experiment_id, folder.parent, since.dispatcher)
        if tuner:
            return f"its tuner/assessor died: {tuner} (log/dispatcher.log)"
        status = rest_status(port, experiment_id)
        now = time.monotonic()
        answered_at = answered_at or (now if status is not None else None)
        if status is not None and status.get("status") == "ERROR":
            said = "; ".join(map(str, status.get("errors") or [])) or (errors[0] if errors else "no error given")
            return with_fix(f"NNI reports ERROR: {said}", experiment_id)
        manager_pid = pid or registry(experiment_id).get("pid")
        if status is None and manager_pid and not process_alive(manager_pid):
            last = errors[0] if errors else crash_output(folder, since.stderr) or "no error in its logs"
            return with_fix(f"NNI's manager (pid {manager_pid}) exited: {last}", experiment_id)
        if ready_at is None and status is not None and (_READY.search(text) or (
                # a training service without a known readiness line (reuse mode, Kubernetes): a first trial and
                # `watch` quiet seconds
                not _V3.search(text) and now - answered_at >= watch and _FIRST_TRIAL.search(text))):
            ready_at = now
        if ready_at is not None and (_FIRST_TRIAL.search(text) or now - ready_at >= watch):
            return None
        if now >= deadline and ready_at is None or now >= deadline + watch:
            if answered_at is None:
                what = f"NNI's manager did not answer on port {port}"
            elif ready_at is None:
                what = "NNI's training service did not initialise"
            else:
                what = "its tuner sent no trial"
            last = f": {errors[0]}" if errors else ""
            return with_fix(f"{what} in {timeout:.0f} s{last}", experiment_id)
        time.sleep(poll)


# ------------------------------------------------------------------------------------------- experiments.check --ID
@dataclass
class Health:
    """What `diagnose` found: `problems` make the experiment unhealthy (one line each), `notes` describe it; `found`
    False: no such experiment (its one problem says where it was looked for)."""
    experiment_id: str
    root: Path
    found: bool = True
    alive: bool = False
    status: str = "UNKNOWN"
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.alive and not self.problems


def diagnose(experiment_id: str, root: str | Path | None = None) -> Health:
    """Read every log NNI keeps for the experiment and ask its manager: alive or not (its pid, its REST API), its
    status, and the first error of the manager's log, the dispatcher's log and each kind of trial failure."""
    from .check import dispatcher_error
    folder = experiment_root(experiment_id, root)
    health = Health(experiment_id, folder)
    entry = registry(experiment_id)
    if not folder.is_dir():
        health.found = False
        health.problems.append(f"no experiment {experiment_id} at {folder} (nor in nnictl's registry, "
                               f"~/nni-experiments/.experiment): pass --root, the experimentWorkingDirectory of its "
                               f"config")
        return health
    pid, port = entry.get("pid"), entry.get("port")
    status = rest_status(port, experiment_id)
    pid_alive = process_alive(pid, experiment_id)
    health.alive = status is not None and pid_alive if pid else status is not None
    recorded = entry.get("status", "UNKNOWN")
    health.status = status.get("status", "UNKNOWN") if status else recorded
    stop_hint = f"`nnictl stop {experiment_id}`"
    if health.alive:
        health.notes.append(f"manager alive (pid {pid}), REST API answering on 127.0.0.1:{port}, status "
                            f"{health.status}")
        if health.status == "ERROR":
            health.problems.append(f"NNI reports ERROR: {'; '.join(map(str, status.get('errors') or []))}")
    elif recorded in ("RUNNING", "INITIALIZED", "VIEWED") or pid_alive:
        why = (f"its manager (pid {pid}) is gone" if not pid_alive else
               f"its manager (pid {pid}) runs but nothing answers on port {port}")
        health.problems.append(f"not running: NNI's registry says {recorded}, but {why} (killed or crashed); "
                               f"continue it with `python -m experiments.secure nnictl resume {experiment_id} --port "
                               f"P`, or mark it stopped with {stop_hint}")
    else:
        health.problems.append(f"not running: {recorded.lower() if recorded != 'UNKNOWN' else 'stopped'} "
                               f"(`python -m experiments.secure nnictl resume {experiment_id} --port P` continues it)")
    manager = manager_errors(read_log(folder / "log" / "nnimanager.log"))
    if manager:
        line = f"nnimanager.log: first error: {with_fix(manager[0], experiment_id)}"
        (health.problems if not health.alive or _SHUTDOWN.search(read_log(folder / "log" / "nnimanager.log"))
         else health.notes).append(line)
    crash = crash_output(folder)
    if crash and not health.alive:
        health.notes.append(f"nnictl_stderr.log: {crash}")
    tuner = dispatcher_error(experiment_id, folder.parent)
    if tuner:
        health.problems.append(f"dispatcher.log: its tuner/assessor died: {tuner}" +
                               (f" (NNI still shows it RUNNING; stop it with {stop_hint})" if health.alive else ""))
    trials = trial_errors(folder)
    for error, ids in list(trials.items())[:5]:
        more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
        health.problems.append(f"trials {', '.join(ids[:3])}{more}: {with_fix(error, experiment_id)}")
    if len(trials) > 5:
        health.problems.append(f"... and {len(trials) - 5} more kinds of trial errors (each trial's trial.stderr)")
    if not manager and not tuner and not trials:
        health.notes.append("no error in nnimanager.log, dispatcher.log or the trials' stderr")
    return health
