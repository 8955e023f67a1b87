"""Start NNI with its dashboard and REST API on 127.0.0.1 only: the environment that loads launch/loopback.js
(a Node preload) into NNI's manager, and a thin nnictl wrapper that uses it.

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

`create` runs the pre-flight check first (experiments/launch/check.py) and refuses to start an experiment whose
config, search space, trial command or tuner cannot work (`--no-check` starts it anyway). nnictl's output is passed
through with its "Web portal URLs" cut to the addresses that answer (nnictl lists every interface, but the dashboard
answers on 127.0.0.1 only). After `create` and `resume` it watches the experiment's dispatcher log for a few seconds
and says so when the tuner or assessor died (NNI 3.0 would go on showing RUNNING with no trials).
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

import yaml

PRELOAD = Path(__file__).resolve().with_name("loopback.js")
TRIAL_IP = "CNNSEARCH_NNI_TRIAL_IP"     # read by loopback.js: where remote trials may connect (nniManagerIp)
# a remote worker whose SSH connection is reset must not kill the manager (NNI 3.0 leaves ssh2's 'error' unhandled)
SSH_GUARD = Path(__file__).resolve().with_name("ssh_guard.js")
WATCH_S = 15.0    # seconds a new experiment's dispatcher is watched for a tuner that dies on start


def node_options(existing: str = "") -> str:
    """NODE_OPTIONS with the preloads added once (double quotes: NODE_OPTIONS' own quoting, for paths with spaces)."""
    for preload in (PRELOAD, SSH_GUARD):
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
    """The config named by `--config FILE` in nnictl's arguments, read with yaml.safe_load; {} when there is none or
    it cannot be read (nnictl then says what is wrong with it)."""
    path = config_path(nnictl_args)
    try:
        config = yaml.safe_load(Path(path).read_text()) if path else None
    except (OSError, yaml.YAMLError):
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


def run_nnictl(args: list[str], env: Mapping[str, str]) -> tuple[int, str | None]:
    """nnictl with `env`, its output passed through line by line with the dashboard URLs cut to loopback ones and
    the hint to stop every experiment cut; returns its exit status and the experiment id it printed (create), if any."""
    proc = subprocess.Popen([nnictl(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    experiment = None
    for line in proc.stdout:
        found = re.search(r"Experiment ID:\s*(?:\x1b\[[0-9;]*m)?(\w+)", line)
        experiment = found.group(1) if found else experiment
        sys.stdout.write(without_stop_all(loopback_urls(line)))
        sys.stdout.flush()
    return proc.wait(), experiment


def working_directory(nnictl_args: list[str]) -> str | None:
    """`experimentWorkingDirectory` of the config nnictl is given (None: NNI's default, ~/nni-experiments)."""
    return config_of(nnictl_args).get("experimentWorkingDirectory")


def watch_dispatcher(experiment_id: str, seconds: float = WATCH_S, root: str | None = None,
                     since: int = 0) -> str | None:
    """Poll the experiment's dispatcher log (after byte `since`) for `seconds`: the tuner/assessor's error if it died
    meanwhile."""
    from .check import dispatcher_error
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        error = dispatcher_error(experiment_id, root, since)
        if error:
            return error
        time.sleep(1)
    return None


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
    if args and args[0] == "create" and config_path(args) and not skip_check:
        from .check import check
        report = check(config_path(args))
        if not report.ok:
            for line in report.problems:
                print(f"error: {line}", file=sys.stderr)
            print("error: the experiment was not started (fix the above, or pass --no-check to start it anyway)",
                  file=sys.stderr)
            return 2
        print(f"pre-flight check: {'; '.join(report.notes)}", file=sys.stderr)
    env = nni_env(manager_ip=config_manager_ip(args))
    if args[0] in ("create", "resume", "view"):
        port = args[args.index("--port") + 1] if "--port" in args[:-1] else "8080"
        where = f" and remote trials on {env[TRIAL_IP]}:{port}" if TRIAL_IP in env else ""
        print(f"dashboard and REST API on http://127.0.0.1:{port} only{where}", file=sys.stderr)
    resumed = args[1] if args[0] == "resume" and len(args) > 1 else None
    since = 0
    if resumed:   # its dispatcher log holds the earlier runs (a killed manager's tuner ends in a traceback): skip them
        from .check import dispatcher_log
        log = dispatcher_log(resumed)
        since = log.stat().st_size if log is not None and log.is_file() else 0
    status, created = run_nnictl(args, env)
    if status == 0 and args[0] in ("create", "resume"):
        experiment = resumed or created
        error = watch_dispatcher(experiment, root=working_directory(args), since=since) if experiment else None
        if error:
            print(f"error: experiment {experiment}: its tuner/assessor died: {error}; NNI will show it RUNNING with "
                  f"no new trials: stop it with `nnictl stop {experiment}`", file=sys.stderr)
            return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
