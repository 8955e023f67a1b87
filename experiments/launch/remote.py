"""Launch any dataset's search on remote workers listed once in a small YAML file, with what NNI 3.0 needs set.

    python -m experiments.launch nni_configs/fmnist.yml --workers workers.yml [--port 8080] [--write remote.yml]
                                 [--start-timeout 180]

The workers file:

    manager_ip: 10.0.0.5        # the address workers reach this machine at (default: the route to the first worker)
    data_dir: /data/cnnsearch   # where every worker keeps the datasets (the trial gets --data-dir)
    workers:
      - host: gpu1.example.com
        port: 22
        user: alice
        key_file: ~/.ssh/id_ed25519
        python: /home/alice/cnnsearch/.venv/bin/python   # the worker's interpreter with requirements.txt installed
        gpus: [0, 1]                                     # leave out for a CPU-only worker
        trials_per_gpu: 2

It writes an NNI experiment YAML (the given config with a remote training service: `reuseMode: false`, since reuse
mode hangs or runs one trial per host in 3.0; an explicit `nniManagerIp`; the workers' machine list) and starts it
with `nnictl create`, after checking that the REST port and the next one (nnictl refuses a remote experiment when it is
taken) are free and warning when the code upload (what `.nniignore` leaves) is large. `--write FILE` only writes the
YAML. The start goes through the secure starter: the pre-flight check first, then nnictl, and the experiment is
reported running only once NNI's manager answers and has reached every worker over SSH and set it up (NNI installs
nni there first: up to `--start-timeout` seconds); otherwise NNI's own error in one line, the experiment stopped, and
a non-zero exit status.

NNI is started through launch/secure.py: the dashboard and REST API listen on 127.0.0.1 only (from another machine,
an SSH tunnel: `ssh -N -L 8080:127.0.0.1:8080 user@manager`, then http://127.0.0.1:8080), and the remote trials'
connections (NNI 3.0 opens them to `nniManagerIp` on the REST port) are taken on manager_ip, where nothing else is
served. To start the written YAML by hand: `python -m experiments.secure nnictl create --config FILE --port PORT`.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import socket
import sys
from pathlib import Path

import yaml

from trial.files import FileFormatError, read_yaml

from . import health, secure

WORKER_KEYS = {"host", "port", "user", "key_file", "python", "gpus", "trials_per_gpu"}
UPLOAD_WARN_MB = 20


class LaunchError(ValueError):
    """A workers file or worker that cannot be used; the message names the file or worker and what to fix."""


def load_workers(path: str | Path) -> dict:
    """The workers file at `path`, checked (keys, required fields, key files exist); raises LaunchError."""
    try:
        data = read_yaml(path)
    except (OSError, FileFormatError) as err:
        raise LaunchError(f"cannot read workers file {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list) or not data["workers"]:
        raise LaunchError(f"{path} must have a non-empty `workers:` list (see python -m experiments.launch --help)")
    unknown = set(data) - {"workers", "manager_ip", "data_dir"}
    if unknown:
        raise LaunchError(f"{path}: unknown keys {sorted(unknown)}; valid: workers, manager_ip, data_dir")
    for i, w in enumerate(data["workers"]):
        if not isinstance(w, dict):
            raise LaunchError(f"{path}: worker {i} must be a mapping")
        missing = {"host", "user", "python"} - set(w)
        if missing:
            raise LaunchError(f"{path}: worker {i} ({w.get('host', '?')}) lacks {sorted(missing)}")
        extra = set(w) - WORKER_KEYS
        if extra:
            raise LaunchError(f"{path}: worker {w['host']} has unknown keys {sorted(extra)}; valid: "
                              f"{', '.join(sorted(WORKER_KEYS))}")
        key = Path(os.path.expanduser(w.get("key_file", "~/.ssh/id_rsa")))
        if not key.is_file():
            raise LaunchError(f"{path}: worker {w['host']}: key file {key} does not exist")
    return data


def route_ip(host: str) -> str:
    """This machine's address on the route to `host` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((socket.gethostbyname(host), 22))
        except OSError as err:
            raise LaunchError(f"cannot find a route to worker {host} ({err}); set manager_ip in the workers file")
        return s.getsockname()[0]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def machine(w: dict) -> dict:
    python = str(w["python"])
    entry = {"host": w["host"], "port": int(w.get("port", 22)), "user": w["user"],
             "sshKeyFile": os.path.expanduser(w.get("key_file", "~/.ssh/id_rsa")),
             # NNI puts pythonPath first on PATH: the folder of the interpreter, so `python -m trial` is this one
             "pythonPath": str(Path(python).parent) if Path(python).name.startswith("python") else python}
    if w.get("gpus") is not None:
        entry.update(gpuIndices=list(w["gpus"]), useActiveGpu=True, maxTrialNumberPerGpu=int(w.get("trials_per_gpu",
                                                                                                    2)))
    return entry


def remote_config(config_path: str | Path, workers: dict, manager_ip: str) -> dict:
    """The local experiment config turned remote: absolute paths, the workers, reuseMode false, nniManagerIp."""
    config_path = Path(config_path)
    config = read_yaml(config_path)
    folder = config_path.resolve().parent
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config:
            config[key] = str((folder / config[key]).resolve())
    for section in ("tuner", "assessor"):
        if isinstance(config.get(section), dict) and "codeDirectory" in config[section]:
            config[section]["codeDirectory"] = str((folder / config[section]["codeDirectory"]).resolve())
    machines = [machine(w) for w in workers["workers"]]
    pythons = {str(w["python"]) for w in workers["workers"]}
    if len(pythons) == 1 and config["trialCommand"].startswith("python "):
        # NNI's remote trial keeper starts trials in a fresh shell where pythonPath is not first on PATH: name the
        # interpreter (with different interpreters per worker, PATH is all there is)
        config["trialCommand"] = pythons.pop() + config["trialCommand"][len("python"):]
    if workers.get("data_dir"):
        config["trialCommand"] += f" --data-dir {workers['data_dir']}"
    if any("gpuIndices" in m for m in machines):
        config["trialGpuNumber"] = 1
    config["nniManagerIp"] = manager_ip
    config["trainingService"] = {"platform": "remote", "reuseMode": False, "machineList": machines}
    slots = sum(len(m.get("gpuIndices", [])) * m.get("maxTrialNumberPerGpu", 1) or 1 for m in machines)
    config["trialConcurrency"] = max(int(config.get("trialConcurrency", 1)), slots)
    return config


def upload_size(code_dir: Path) -> int:
    """Bytes NNI would upload: files under code_dir not matched by its .nniignore patterns."""
    patterns = []
    ignore = code_dir / ".nniignore"
    if ignore.is_file():
        patterns = [p.strip().rstrip("/") for p in ignore.read_text().splitlines() if p.strip()
                    and not p.startswith("#")]
    total = 0
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in patterns)]
        total += sum((Path(root) / f).stat().st_size for f in files
                     if not any(fnmatch.fnmatch(f, p) for p in patterns) and (Path(root) / f).is_file())
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("config", help="an experiment YAML, e.g. nni_configs/fmnist.yml")
    p.add_argument("--workers", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--write", help="write the remote YAML here and stop")
    p.add_argument("--start-timeout", type=float, default=health.REMOTE_START_S,
                   help="seconds NNI's manager gets to reach and set up every worker (default %(default)s)")
    args = p.parse_args(argv)
    try:
        workers = load_workers(args.workers)
        manager_ip = workers.get("manager_ip") or route_ip(workers["workers"][0]["host"])
        config = remote_config(args.config, workers, manager_ip)
        from nni.experiment.config import ExperimentConfig
        ExperimentConfig(**config).validate()
    except (LaunchError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = upload_size(Path(config["trialCodeDirectory"]))
    if size > UPLOAD_WARN_MB * 2 ** 20:
        print(f"warning: NNI will upload {size / 2 ** 20:.0f} MB of code to every worker; add data and outputs to "
              f".nniignore", file=sys.stderr)
    out = Path(args.write or f"remote-{Path(args.config).stem}.yml")
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out} ({len(config['trainingService']['machineList'])} workers, manager {manager_ip})")
    if args.write:
        return 0
    for port in (args.port, args.port + 1):
        if not port_free(port):
            print(f"error: port {port} is taken on this machine; NNI needs --port and the next one free (nnictl "
                  f"refuses a remote experiment otherwise): pick another --port", file=sys.stderr)
            return 2
    # the secure starter: the pre-flight check first, then nnictl with the preload (its nniManagerIp is manager_ip)
    status = secure.main(["create", "--config", str(out), "--port", str(args.port), "--start-timeout",
                          str(args.start_timeout)])
    if status == 0:
        print(f"dashboard on http://127.0.0.1:{args.port} only (elsewhere: ssh -N -L {args.port}:127.0.0.1:"
              f"{args.port} this-host); remote trials connect to {manager_ip}:{args.port}")
    return status


if __name__ == "__main__":
    sys.exit(main())
