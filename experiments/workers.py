"""Check remote workers before an experiment needs them: one line per worker, and the reason when one is unusable.

    python -m experiments.workers check workers.yml

For each worker of the workers file (see experiments/launch.py) it connects over SSH with the worker's key (batch mode:
no password prompts), runs the worker's Python with a small probe, and checks: the interpreter exists; torch and nni
are installed at the manager's versions; CUDA and the GPUs it sees (against the `gpus` the file lists); the data
directory exists and holds the datasets' files; free disk. It exits non-zero if any worker is unusable.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .launch import LaunchError, load_workers

MIN_FREE_GB = 2.0
# Run by the worker's Python: standard library only, and it must not fail where torch or nni are missing.
PROBE = r'''
import json, os, shutil, sys
out = {"python": sys.version.split()[0]}
for name in ("torch", "nni"):
    try:
        from importlib import metadata
        out[name] = metadata.version(name)
    except Exception:
        out[name] = None
try:
    import torch
    out["cuda"] = torch.cuda.is_available()
    out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if out["cuda"] else []
except Exception as err:
    out["cuda"], out["gpus"], out["torch_error"] = False, [], repr(err)
data = sys.argv[1] if len(sys.argv) > 1 else ""
layouts = {"mnist": ["MNIST/raw", "MNIST"], "fmnist": ["FashionMNIST/raw"],
           "cifar10": ["CIFAR10/cifar-10-batches-bin", "CIFAR10/cifar-10-batches-py", "cifar-10-batches-bin",
                       "cifar-10-batches-py"]}
if data:
    data = os.path.expanduser(data)
    out["data_dir_exists"] = os.path.isdir(data)
    out["datasets"] = sorted(k for k, subs in layouts.items()
                             if any(os.path.isdir(os.path.join(data, s)) and os.listdir(os.path.join(data, s))
                                    for s in subs))
home = os.path.expanduser("~")
out["free_gb"] = shutil.disk_usage(home).free / 2 ** 30
print("PROBE" + json.dumps(out))
'''


def ssh_command(w: dict, remote: str, known_hosts: str | None = None) -> list[str]:
    known = known_hosts or str(Path.home() / ".cache" / "cnnsearch" / "known_hosts")
    Path(known).parent.mkdir(parents=True, exist_ok=True)
    return ["ssh", "-i", os.path.expanduser(w.get("key_file", "~/.ssh/id_rsa")), "-p", str(w.get("port", 22)),
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes", f"{w['user']}@{w['host']}", remote]


def manager_versions() -> dict:
    return {name: metadata.version(name) for name in ("torch", "nni")}


def check_worker(w: dict, data_dir: str | None, known_hosts: str | None = None, timeout: float = 60) -> tuple[bool, str]:
    """(usable, one line) for a worker."""
    name = f"{w['user']}@{w['host']}:{w.get('port', 22)}"
    remote = " ".join(shlex.quote(a) for a in [str(w["python"]), "-c", PROBE] + ([data_dir] if data_dir else []))
    try:
        done = subprocess.run(ssh_command(w, remote, known_hosts), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"FAIL {name}: no answer in {timeout:.0f} s (host down or firewalled?)"
    probe = next((line[5:] for line in done.stdout.splitlines() if line.startswith("PROBE")), None)
    if probe is None:
        err = done.stderr.strip().splitlines()
        last = err[-1] if err else f"exit status {done.returncode}"
        if done.returncode == 255:
            return False, f"FAIL {name}: ssh failed: {last} (check host, port, user and key_file)"
        if done.returncode == 127 or "No such file" in done.stderr or "not found" in done.stderr:
            return False, f"FAIL {name}: python {w['python']} not found on the worker (set `python` to its interpreter)"
        return False, f"FAIL {name}: the probe failed: {last}"
    info = json.loads(probe)
    problems = []
    want = manager_versions()
    for pkg in ("torch", "nni"):
        if info.get(pkg) != want[pkg]:
            problems.append(f"{pkg} {info.get(pkg) or 'not installed'} (manager has {want[pkg]}; "
                            f"pip install -r requirements.txt with {w['python']})")
    if w.get("gpus"):
        if not info.get("cuda"):
            problems.append(f"gpus {w['gpus']} listed but torch sees no CUDA device")
        elif max(w["gpus"]) >= len(info["gpus"]):
            problems.append(f"gpus {w['gpus']} listed but torch sees {len(info['gpus'])}")
    if data_dir:
        if not info.get("data_dir_exists"):
            problems.append(f"data directory {data_dir} is missing (copy the datasets there)")
        elif not info.get("datasets"):
            problems.append(f"data directory {data_dir} holds none of MNIST/, FashionMNIST/, CIFAR10/")
    if info["free_gb"] < MIN_FREE_GB:
        problems.append(f"only {info['free_gb']:.1f} GB free in the home directory")
    summary = (f"python {info['python']}, torch {info.get('torch')}, nni {info.get('nni')}, "
               f"{'CUDA: ' + ', '.join(info['gpus']) if info.get('gpus') else 'no GPU'}"
               + (f", data: {', '.join(info.get('datasets') or []) or 'none'}" if data_dir else "")
               + f", {info['free_gb']:.0f} GB free")
    if problems:
        return False, f"FAIL {name}: {'; '.join(problems)} [{summary}]"
    return True, f"OK   {name}: {summary}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["check"])
    p.add_argument("workers")
    p.add_argument("--known-hosts", help="ssh known_hosts file (default ~/.cache/cnnsearch/known_hosts)")
    args = p.parse_args(argv)
    try:
        spec = load_workers(args.workers)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = True
    for w in spec["workers"]:
        usable, line = check_worker(w, spec.get("data_dir"), args.known_hosts)
        print(line, flush=True)
        ok &= usable
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
