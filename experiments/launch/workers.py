"""Check and prepare remote workers before an experiment needs them: one line per worker, and the reason when one is
unusable or could not be prepared.

    python -m experiments.launch.workers check workers.yml
    python -m experiments.launch.workers prepare workers.yml [--dataset fmnist ...] [--requirements FILE ...]

Both connect to each worker of the workers file (see experiments/launch/remote.py) over SSH with the worker's key (batch mode:
no password prompts) and run the worker's Python; both exit non-zero if any worker failed.

`check` runs a small probe: the interpreter exists; torch and nni are installed at the manager's versions; CUDA and the
GPUs it sees (against the `gpus` the file lists); the data directory exists and holds the datasets' files; free disk.

`prepare` sends the worker, on the SSH session's stdin, a small archive of the requirements (the lines of the given
files with `-r` includes inlined; a local path among them must exist on the worker) and this repository's `trial/`
package, which a script run by the worker's Python unpacks into a temporary directory (removed afterwards). There it
runs `python -m pip install -r requirements.txt` with that Python, then decodes the datasets (`--dataset`, default:
every dataset found) from the workers file's `data_dir` into the worker's tensor cache with `trial.data.load`: the same
code, file lock, cache key and CNNSEARCH_CACHE (default ~/.cache/cnnsearch) that trials started there over SSH use, so
the first trials load the cache instead of all decoding at once. It never downloads. Running it again reinstalls nothing
that is satisfied and decodes nothing that is cached. Workers are prepared one after another.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from trial import REPO
from trial.data import INFO

from .remote import LaunchError, load_workers

MIN_FREE_GB = 2.0
PREPARE_TIMEOUT = 1800      # seconds per worker: a first install downloads torch
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
layouts = json.loads(sys.argv[2])
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
# the dataset table's folders, for the probe (which runs where this repository is not): {name: [folder, ...]}
LAYOUTS = json.dumps({name: sorted({layout.folder for layout in ds.layouts}) for name, ds in INFO.items()})


def ssh_command(w: dict, remote: str, known_hosts: str | None = None) -> list[str]:
    known = known_hosts or str(Path.home() / ".cache" / "cnnsearch" / "known_hosts")
    Path(known).parent.mkdir(parents=True, exist_ok=True)
    return ["ssh", "-i", os.path.expanduser(w.get("key_file", "~/.ssh/id_rsa")), "-p", str(w.get("port", 22)),
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={known}", "-o", "IdentitiesOnly=yes", f"{w['user']}@{w['host']}", remote]


def worker_name(w: dict) -> str:
    return f"{w['user']}@{w['host']}:{w.get('port', 22)}"


def no_answer_reason(w: dict, returncode: int, stderr: str, what: str) -> str:
    """Why the worker's script printed no result: ssh, a missing interpreter, or the script's own last error line."""
    err = stderr.strip().splitlines()
    last = err[-1] if err else f"exit status {returncode}"
    if returncode == 255:
        return f"ssh failed: {last} (check host, port, user and key_file)"
    if returncode == 127 or "No such file" in stderr or "not found" in stderr:
        return f"python {w['python']} not found on the worker (set `python` to its interpreter)"
    return f"{what} failed: {last}"


def manager_versions() -> dict:
    return {name: metadata.version(name) for name in ("torch", "nni")}


def check_worker(w: dict, data_dir: str | None, known_hosts: str | None = None, timeout: float = 60) -> tuple[bool, str]:
    """(usable, one line) for a worker: the probe's findings, or why it gave none."""
    name = worker_name(w)
    remote = shlex.join([str(w["python"]), "-c", PROBE, data_dir or "", LAYOUTS])
    try:
        done = subprocess.run(ssh_command(w, remote, known_hosts), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"FAIL {name}: no answer in {timeout:.0f} s (host down or firewalled?)"
    probe = next((line[5:] for line in done.stdout.splitlines() if line.startswith("PROBE")), None)
    if probe is None:
        return False, f"FAIL {name}: {no_answer_reason(w, done.returncode, done.stderr, 'the probe')}"
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


# Run by the worker's Python (standard library only) with the archive on stdin: unpack it into a temporary directory,
# refuse a missing data directory before a long install, pip install, then decode in a fresh process (it imports what
# pip just installed). Prints one PREPARE line of JSON.
BOOTSTRAP = r'''
import io, json, os, shutil, subprocess, sys, tarfile, tempfile
out = {"python": sys.executable, "prefix": sys.prefix}
data_dir, datasets = sys.argv[1], sys.argv[2:]
tmp = tempfile.mkdtemp(prefix="cnnsearch-prepare-")
try:
    with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:gz") as tar:
        tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    if data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        out["error"] = "data directory %s does not exist on the worker (copy the datasets there)" % data_dir
    else:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                              "-r", os.path.join(tmp, "requirements.txt")], capture_output=True, text=True)
        out["pip"] = {"rc": pip.returncode, "stdout": pip.stdout.splitlines()[-200:],
                      "stderr": pip.stderr.splitlines()[-40:]}
        if pip.returncode == 0:
            dec = subprocess.run([sys.executable, os.path.join(tmp, "decode.py"), data_dir] + datasets, cwd=tmp,
                                 capture_output=True, text=True)
            line = [l for l in dec.stdout.splitlines() if l.startswith("DECODE")]
            out["decode"] = json.loads(line[-1][6:]) if line else {"error": "the decode step failed: " + (
                dec.stderr.strip().splitlines() or ["exit status %d" % dec.returncode])[-1]}
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print("PREPARE" + json.dumps(out))
'''

# decode.py in the archive: run beside the uploaded trial package, after the install
DECODE = r'''
import json, sys, time
from importlib import metadata
from trial import data
data_dir = sys.argv[1] or None
names = sys.argv[2:] or data.available(data_dir)
dirs = [str(d) for d in data.candidate_dirs(data_dir)]
out = {"torch": metadata.version("torch"), "nni": metadata.version("nni"), "dirs": dirs, "datasets": []}
if not names and data_dir:
    out["error"] = "data directory %s holds none of MNIST/, FashionMNIST/, CIFAR10/" % data_dir
for name in names:
    try:
        cache = data.cache_file(name, data_dir)
        before = cache.stat().st_mtime_ns if cache and cache.is_file() else None
        start = time.perf_counter()
        s = data.load(name, data_dir, download=False)
        cache = data.cache_file(name, data_dir)
        out["datasets"].append({"name": name, "train": len(s.train_x), "test": len(s.test_x), "cache": str(cache),
                                "decoded": before is None or cache.stat().st_mtime_ns != before,
                                "seconds": round(time.perf_counter() - start, 2)})
    except data.DatasetError as err:
        out["error"] = "%s: %s" % (name, err)
        break
print("DECODE" + json.dumps(out))
'''


def read_pins(paths: list[Path], seen: set | None = None) -> list[str]:
    """The requirement lines of these files, comments dropped and `-r FILE` includes inlined (only the result goes to
    the worker, which may not have this repository)."""
    seen = set() if seen is None else seen
    pins = []
    for path in paths:
        path = Path(path).resolve()
        if path in seen:
            continue
        seen.add(path)
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise LaunchError(f"cannot read requirements file {path}: {err}") from None
        for line in lines:
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            include = re.match(r"(?:-r|--requirement)[\s=]+(\S+)$", line)
            if include:
                pins += read_pins([path.parent / include.group(1)], seen)
            elif line:
                pins.append(line)
    return pins


def bundle(pins: list[str]) -> bytes:
    """A tar.gz of requirements.txt, decode.py and the trial package (its .py files)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, text: str):
            raw = text.encode()
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(raw), 0o644
            tar.addfile(member, io.BytesIO(raw))
        add("requirements.txt", "\n".join(pins) + "\n")
        add("decode.py", DECODE)
        for path in sorted((REPO / "trial").glob("*.py")):
            add(f"trial/{path.name}", path.read_text())
    return buf.getvalue()


def _pip_summary(pip: dict) -> str:
    installed = next((line.split("Successfully installed", 1)[1].split() for line in pip["stdout"]
                      if line.startswith("Successfully installed")), [])
    satisfied = sum(line.startswith("Requirement already satisfied") for line in pip["stdout"])
    return (f"installed {len(installed)} ({' '.join(installed)})" if installed else "installed nothing") + \
        f", {satisfied} already satisfied"


def _pip_failure(w: dict, pip: dict) -> str:
    lines = pip["stderr"] + pip["stdout"]
    if any("No module named pip" in line for line in lines):
        return f"pip is not installed for {w['python']} (run `{w['python']} -m ensurepip`, or make a venv with pip)"
    errors = [line.strip() for line in lines if line.startswith("ERROR")]
    last = errors[-1] if errors else (lines[-1].strip() if lines else f"exit status {pip['rc']}")
    return f"pip install -r requirements.txt with {w['python']} failed: {last}"


def prepare_worker(w: dict, data_dir: str | None, datasets: list[str], archive: bytes,
                   known_hosts: str | None = None, timeout: float = PREPARE_TIMEOUT) -> tuple[bool, str]:
    """(prepared, one line) for a worker: the requirements installed with its Python, the datasets in its cache."""
    name = worker_name(w)
    remote = shlex.join([str(w["python"]), "-c", BOOTSTRAP, data_dir or "", *datasets])
    try:
        done = subprocess.run(ssh_command(w, remote, known_hosts), input=archive, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"FAIL {name}: not done in {timeout:.0f} s (a slow install? raise --timeout)"
    stdout, stderr = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    result = next((line[7:] for line in stdout.splitlines() if line.startswith("PREPARE")), None)
    if result is None:
        return False, f"FAIL {name}: {no_answer_reason(w, done.returncode, stderr, 'the prepare script')}"
    out = json.loads(result)
    if out.get("error"):
        return False, f"FAIL {name}: {out['error']}"
    pip = out["pip"]
    if pip["rc"] != 0:
        tail = "\n".join("    " + line for line in (pip["stderr"] or pip["stdout"])[-15:])
        print(f"{name}: pip's last lines:\n{tail}", file=sys.stderr)
        return False, f"FAIL {name}: {_pip_failure(w, pip)}"
    dec = out["decode"]
    where = f"pip in {out['prefix']}: {_pip_summary(pip)}"
    if dec.get("error"):
        return False, f"FAIL {name}: {dec['error']} [{where}]"
    if dec["datasets"]:
        sets = ", ".join(f"{d['name']} {d['train']}+{d['test']} "
                         + (f"decoded in {d['seconds']:.2f} s" if d["decoded"] else "already cached")
                         for d in dec["datasets"])
        cache = str(Path(dec["datasets"][0]["cache"]).parent)
        data = f"data from {dec['dirs'][0] if data_dir else ' or '.join(dec['dirs'])}: {sets}; cache {cache}"
    else:
        data = f"no datasets found in {' or '.join(dec['dirs'])} (no data_dir in the workers file)"
    return True, f"OK   {name}: {where}; torch {dec['torch']}, nni {dec['nni']}; {data}"


def main(argv=None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("workers", help="the workers file (format: python -m experiments.launch --help)")
    common.add_argument("--known-hosts", help="ssh known_hosts file (default ~/.cache/cnnsearch/known_hosts)")
    p = argparse.ArgumentParser(prog="python -m experiments.launch.workers", description=__doc__.split("\n\n")[0])
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("check", parents=[common], help="probe each worker: python, versions, GPUs, data, disk")
    prep = actions.add_parser("prepare", parents=[common],
                              help="install the requirements with each worker's python and decode its data cache")
    prep.add_argument("--dataset", action="extend", nargs="+", choices=list(INFO),
                      help="datasets to decode (default: every dataset found in data_dir)")
    prep.add_argument("--requirements", action="append", type=Path,
                      help="requirements file to install (repeat for more; default: requirements.txt)")
    prep.add_argument("--timeout", type=float, default=PREPARE_TIMEOUT, help="seconds per worker")
    args = p.parse_args(argv)
    try:
        spec = load_workers(args.workers)
        if args.action == "prepare":
            archive = bundle(read_pins(args.requirements or [REPO / "requirements.txt"]))
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = True
    for w in spec["workers"]:
        if args.action == "check":
            usable, line = check_worker(w, spec.get("data_dir"), args.known_hosts)
        else:
            usable, line = prepare_worker(w, spec.get("data_dir"), args.dataset or [], archive, args.known_hosts,
                                          args.timeout)
        print(line, flush=True)
        ok &= usable
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
