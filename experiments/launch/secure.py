"""Start NNI with its dashboard and REST API on 127.0.0.1 only: the environment that loads launch/loopback.js
(a Node preload) into NNI's manager, with ssh_guard.js (a dead SSH worker does not kill the manager) and pairing.js
(each trial gets the parameters NNI records for it; parameter ids stay unique across `nnictl resume`), and a thin
nnictl wrapper that uses it.

    python -m experiments.secure nnictl create --config nni_configs/fmnist.yml --port 8080   # any nnictl command
    python -m experiments.secure nnictl resume EXPERIMENT_ID --port 8080
    eval "$(python -m experiments.secure --shell)"      # or: this shell's own nnictl commands load the preload

NNI 3.0 serves the dashboard and a REST API that can read the experiment, change its search space, add trials and
delete it on every interface, with no authentication, and it proxies `/netron/` to the internet (offline, one such
request kills the manager). With the preload the port listens on 127.0.0.1 only (watch a remote manager through an SSH
tunnel: `ssh -N -L 8080:127.0.0.1:8080 user@manager`) and `/netron/` is refused. Remote trials connect back to
`nniManagerIp` on the same port: when that is not a loopback address, the manager also listens there, for the remote
trials' channels only (CNNSEARCH_NNI_TRIAL_IP; the wrapper reads it from the config's `nniManagerIp`). Our own
launchers (experiments.launch.local, experiments.launch) always start NNI this way.

`create` runs the pre-flight check first (experiments/launch/check.py, with the --port given) and refuses to start an
experiment whose config, search space, trial command, tuner, interpreter, GPUs, port or folders cannot work
(`--no-check` starts it anyway). After `create` and `resume` nothing is said to be running before it is: nnictl
prints the dashboard address and exits 0 a second after NNI's manager starts, also when the manager shuts itself
down seconds later (a GPU asked for where there is none) or its tuner dies at once (NNI 3.0 then shows RUNNING with
no trials). So the starter holds nnictl's output back and waits (experiments/launch/health.py, up to 60 s; 180 s for
a remote experiment; `--start-timeout S`) until the manager answers on its REST API, its training service has
initialised and its tuner has sent a first trial. Then it passes nnictl's output on, the "Web portal URLs" cut to the
addresses that answer (the dashboard answers on 127.0.0.1 only) and the hint to stop every experiment cut, and exits
0. Otherwise it prints NNI's own error from the manager's or dispatcher's log in one line with the fix, stops the
experiment by its id, and exits 3. nnictl's known failures (a port taken, no such config or experiment) are one line
each, exit 2 (nothing was started); an id that nnictl's registry does not hold is refused so before nnictl runs
(`resume`, `view`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from trial.files import FileFormatError, read_yaml

from . import health

PRELOAD = Path(__file__).resolve().with_name("loopback.js")
TRIAL_IP = "CNNSEARCH_NNI_TRIAL_IP"     # read by loopback.js: where remote trials may connect (nniManagerIp)
# a remote worker whose SSH connection is reset must not kill the manager (NNI 3.0 leaves ssh2's 'error' unhandled)
SSH_GUARD = Path(__file__).resolve().with_name("ssh_guard.js")
# each trial gets the parameters NNI records for it, and parameter ids stay unique across `nnictl resume`
PAIRING = Path(__file__).resolve().with_name("pairing.js")


def node_options(existing: str = "") -> str:
    """NODE_OPTIONS with the preloads added once (double quotes: NODE_OPTIONS' own quoting, for paths with spaces)."""
    for preload in (PRELOAD, SSH_GUARD, PAIRING):
        option = f'--require "{preload}"'
        existing = existing if option in existing else f"{existing} {option}".strip()
    return existing


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def trial_address(manager_ip: str | None) -> str | None:
    """The address remote trials connect to, as an IP; None for none or a loopback one (the REST port serves it)."""
    if not manager_ip or is_loopback(manager_ip):
        return None
    try:
        return str(ipaddress.ip_address(manager_ip))
    except ValueError:
        return socket.gethostbyname(manager_ip)


def nni_env(base: Mapping[str, str] | None = None, manager_ip: str | None = None) -> dict[str, str]:
    """A copy of `base` (default os.environ) for a process that starts NNI's manager (nnictl, Experiment.start):
    NODE_OPTIONS loads the preload; `manager_ip` (nniManagerIp), if not loopback, is opened to remote trials."""
    env = dict(os.environ if base is None else base)
    env["NODE_OPTIONS"] = node_options(env.get("NODE_OPTIONS", ""))
    address = trial_address(manager_ip)
    if address:
        env[TRIAL_IP] = address
    return env


def unprotected_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `base` without the preload: NNI's own behaviour (tests use it to show what the preload changes)."""
    env = dict(os.environ if base is None else base)
    options = env.pop("NODE_OPTIONS", "").replace(f'--require "{PRELOAD}"', "").strip()
    if options:
        env["NODE_OPTIONS"] = options
    env.pop(TRIAL_IP, None)
    return env


class LoopbackPortalFilter(logging.Filter):
    """On NNI's "nni.experiment" logger: the "Web portal URLs" line Experiment.start logs (every interface's address)
    cut to the addresses that answer, as loopback_urls does for nnictl's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Web portal URLs:" in message:
            record.msg, record.args = loopback_urls(message).rstrip("\n"), ()
        return True


@contextmanager
def protected(manager_ip: str | None = None) -> Iterator[None]:
    """For nni.experiment.Experiment, which starts the manager with this process's environment: the preload is in
    os.environ while the block runs (wrap `exp.start(...)`), then the environment is as it was. While it runs, the
    "Web portal URLs" NNI logs names only the addresses that answer (LoopbackPortalFilter)."""
    saved = {key: os.environ.get(key) for key in ("NODE_OPTIONS", TRIAL_IP)}
    env = nni_env(manager_ip=manager_ip)
    os.environ.update({key: env[key] for key in saved if key in env})
    portal = LoopbackPortalFilter()
    logging.getLogger("nni.experiment").addFilter(portal)
    try:
        yield
    finally:
        logging.getLogger("nni.experiment").removeFilter(portal)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def config_of(nnictl_args: list[str]) -> dict:
    """The config named by `--config FILE` in nnictl's arguments, read with trial.files.read_yaml; {} when there is none or
    it cannot be read (nnictl then says what is wrong with it)."""
    path = config_path(nnictl_args)
    try:
        config = read_yaml(path) if path else None
    except (OSError, FileFormatError):
        return {}
    return config if isinstance(config, dict) else {}


def config_manager_ip(nnictl_args: list[str]) -> str | None:
    """`nniManagerIp` of the config named by `--config FILE` in nnictl's arguments, if any."""
    return config_of(nnictl_args).get("nniManagerIp")


def nnictl() -> str:
    beside = Path(sys.executable).parent / "nnictl"
    return str(beside) if beside.exists() else (shutil.which("nnictl") or "nnictl")


def config_path(nnictl_args: list[str]) -> str | None:
    """The file named by `--config FILE` (or `--config=FILE`) in nnictl's arguments, if any."""
    for i, arg in enumerate(nnictl_args):
        if arg == "--config" and i + 1 < len(nnictl_args):
            return nnictl_args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def loopback_urls(line: str) -> str:
    """nnictl's "Web portal URLs: http://127.0.0.1:8080 http://10.0.0.5:8080" with only the addresses that answer
    (the preload keeps the dashboard on 127.0.0.1); any other line unchanged."""
    if "Web portal URLs:" not in line:
        return line
    head, _, urls = line.partition("Web portal URLs:")
    kept = [u for u in re.findall(r"https?://[^\s\x1b]+", urls)
            if is_loopback(re.sub(r"^https?://|:\d+/?$", "", u).strip("[]"))]
    return f"{head}Web portal URLs: {' '.join(kept)}\n" if kept else line


def without_stop_all(line: str) -> str:
    """nnictl create's 'To stop experiment run "nnictl stop ID" or ...' with its second command, the one that stops
    every experiment of the user, cut: on a machine shared with other people's experiments that is never the advice;
    any other line unchanged."""
    return re.sub(r'\s+or\s+"nnictl stop -{2}all"', "", line)


def run_nnictl(args: list[str], env: Mapping[str, str], echo: bool = True) -> tuple[int, str | None, list[str]]:
    """nnictl with `env`; with `echo` its output passed through line by line with the dashboard URLs cut to loopback
    ones and the hint to stop every experiment cut (`show`); returns its exit status, the experiment id it printed
    (create), if any, and its output lines."""
    proc = subprocess.Popen([nnictl(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    experiment, lines = None, []
    for line in proc.stdout:
        found = re.search(r"Experiment ID:\s*(?:\x1b\[[0-9;]*m)?(\w+)", line)
        experiment = found.group(1) if found else experiment
        lines.append(line)
        if echo:
            show([line])
    return proc.wait(), experiment, lines


def show(lines: list[str]) -> None:
    for line in lines:
        sys.stdout.write(without_stop_all(loopback_urls(line)))
    sys.stdout.flush()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# nnictl's failures before an experiment runs -> one line (the fallback: the exception or ERROR line it ended with)
NNICTL_FAILURES = [
    (re.compile(r"Port (\d+) is not idle"),
     lambda m, a: f"port {m[1]} is taken: pick another --port (NNI needs it free, and for a remote experiment "
                  f"{int(m[1]) + 1} too)"),
    (re.compile(r'"(.+)" is not a valid file'), lambda m, a: f"config file {m[1]} not found"),
    (re.compile(r"'NoneType' object has no attribute 'get'|no experiments matched", re.I),
     lambda m, a: unknown_line(a[1] if len(a) > 1 else "")),
    (re.compile(r"Create experiment failed: (.*)"), lambda m, a: health.with_fix(f"NNI's manager failed: {m[1]}")),
]


def unknown_line(experiment: str, folder: str | None = None) -> str:
    """The one line for an experiment id nnictl does not know: where it was looked for."""
    where = f"; nor under --experiment_dir {folder}" if folder else ""
    return (f"no experiment {experiment} in this user's nnictl registry (~/nni-experiments/.experiment{where}; "
            f"`nnictl experiment list --all` lists them)")


def unknown_experiment(args: list[str]) -> str | None:
    """For `resume ID` and `view ID`: unknown_line when neither nnictl's registry nor the --experiment_dir given holds
    the experiment, else None. Checked before nnictl runs: it would print a start or a traceback first."""
    if len(args) < 2 or args[0] not in ("resume", "view") or health.registry(args[1]):
        return None
    folder = _option(args, "--experiment_dir", "-e")
    if folder and (Path(folder).expanduser() / args[1]).is_dir():
        return None
    return unknown_line(args[1], folder)


def nnictl_failure(lines: list[str], args: list[str]) -> str:
    """nnictl's failure in one line: a known one in our words, else the error it ended with."""
    text = _ANSI.sub("", "".join(lines))
    for pattern, say in NNICTL_FAILURES:
        match = pattern.search(text)
        if match:
            return say(match, args)
    errors = [line.split("ERROR:", 1)[1].strip() for line in text.splitlines() if "ERROR:" in line]
    error = health.exception_line(text) or (errors[-1] if errors else None)
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return health.with_fix(error or (last[-1] if last else "nnictl printed nothing"))


def stop(experiment: str, env: Mapping[str, str]) -> str:
    """Stop the experiment by its id (never every experiment); what happened, for the user."""
    entry = health.registry(experiment)
    if entry.get("status") == "STOPPED" and not health.process_alive(entry.get("pid"), experiment):
        return "its manager has stopped"
    try:
        subprocess.run([nnictl(), "stop", experiment], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pass
    pid = health.registry(experiment).get("pid")
    deadline = time.monotonic() + 15
    while health.process_alive(pid, experiment) and time.monotonic() < deadline:
        time.sleep(0.5)
    if health.process_alive(pid, experiment):
        return f"it still runs (pid {pid}): stop it with `nnictl stop {experiment}`"
    return f"stopped it (`nnictl stop {experiment}`)"


def working_directory(nnictl_args: list[str]) -> str | None:
    """`experimentWorkingDirectory` of the config nnictl is given, as NNI resolves it (against the YAML's folder);
    None: NNI's default, ~/nni-experiments."""
    folder = config_of(nnictl_args).get("experimentWorkingDirectory")
    path = config_path(nnictl_args)
    return str(Path(path).parent / Path(folder).expanduser()) if folder and path else folder


def _option(args: list[str], *names: str) -> str | None:
    """The value of `--name V` or `--name=V` among nnictl's arguments."""
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                return arg.split("=", 1)[1]
    return None


def _platform(args: list[str]) -> str:
    if args[0] == "resume" and len(args) > 1:
        return health.registry(args[1]).get("platform") or "local"
    service = config_of(args).get("trainingService")
    return "hybrid" if isinstance(service, list) else (service or {}).get("platform", "local")


def start(args: list[str], env: Mapping[str, str], port: int, timeout: float | None = None) -> int:
    """`nnictl create` or `resume`, reported as running only once it runs (see the module docstring): 0, 2 when
    nnictl started nothing, 3 when NNI's manager or tuner failed (the experiment is then stopped)."""
    resumed = args[1] if args[0] == "resume" and len(args) > 1 else None
    since = health.Offsets.of(health.experiment_root(resumed)) if resumed else health.Offsets()
    if timeout is None:
        timeout = health.START_S if _platform(args) == "local" else health.REMOTE_START_S
    print(f"starting: waiting up to {timeout:.0f} s for NNI's manager on 127.0.0.1:{port} and its training service",
          file=sys.stderr)
    status, created, lines = run_nnictl(args, env, echo=False)
    experiment = resumed or created
    if status != 0:
        stopped = ""
        if created and health.registry(created):      # registered, so perhaps started: stop it by its id
            stopped = f"; {stop(created, env)}"
        print(f"error: the experiment was not started: {nnictl_failure(lines, args)}{stopped}", file=sys.stderr)
        return 2
    if experiment is None:
        show(lines)
        print("error: nnictl named no experiment: its output is above", file=sys.stderr)
        return 3
    root = health.experiment_root(experiment, None if health.registry(experiment) else working_directory(args))
    error = health.wait_started(experiment, port, root, since=since, timeout=timeout)
    if error:
        print(f"error: experiment {experiment} did not start: {error}; {stop(experiment, env)}; its logs: "
              f"{root / 'log'}", file=sys.stderr)
        return 3
    show(lines)
    where = f" and remote trials on {env[TRIAL_IP]}:{port}" if TRIAL_IP in env else ""
    print(f"experiment {experiment} is running: dashboard and REST API on http://127.0.0.1:{port} only{where}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args == ["nnictl"]:
        print(__doc__)
        return 0
    if args == ["--shell"]:
        print(f"export NODE_OPTIONS={shlex.quote(node_options(os.environ.get('NODE_OPTIONS', '')))}")
        return 0
    if args[0] == "nnictl":
        args = args[1:]
    skip_check = "--no-check" in args
    args = [a for a in args if a != "--no-check"]
    timeout = _option(args, "--start-timeout")
    if timeout is not None:
        i = next(i for i, a in enumerate(args) if a.startswith("--start-timeout"))
        del args[i:i + (1 if "=" in args[i] else 2)]
    try:
        port = int(_option(args, "--port", "-p") or 8080)
        timeout = float(timeout) if timeout is not None else None
    except ValueError:
        print("error: --port must be a number and --start-timeout a number of seconds", file=sys.stderr)
        return 2
    if args and args[0] == "create" and config_path(args) and not skip_check:
        from .check import check
        report = check(config_path(args), port=port)
        if not report.ok:
            for line in report.problems:
                print(f"error: {line}", file=sys.stderr)
            print("error: the experiment was not started (fix the above, or pass --no-check to start it anyway)",
                  file=sys.stderr)
            return 2
        print(f"pre-flight check: {'; '.join(report.notes)}", file=sys.stderr)
    unknown = unknown_experiment(args)
    if unknown:
        print(f"error: {'the experiment was not started' if args[0] == 'resume' else 'nothing to view'}: {unknown}",
              file=sys.stderr)
        return 2
    env = nni_env(manager_ip=config_manager_ip(args))
    if args and args[0] in ("create", "resume"):
        return start(args, env, port, timeout)
    status, _, _ = run_nnictl(args, env)
    if status == 0 and args and args[0] == "view":
        print(f"dashboard and REST API on http://127.0.0.1:{port} only", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
