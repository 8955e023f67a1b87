"""A private sshd on a loopback address: a real SSH worker for tests. Its own host key, key-only login, a spare port;
stopped by its own pid. `kill_host` makes such a worker die as a machine would: the sshd and everything started
through it, at once."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def available() -> str | None:
    """None when a test sshd can run here, else why not."""
    if not Path(SSHD).exists():
        return "openssh-server is not installed (.ci/run installs it: apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "a private sshd that logs this user in needs root here"
    return None


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def private_sshd(tmp: Path, host: str = "127.0.0.2", also: tuple[str, ...] = (), env: dict[str, str] | None = None):
    """Yields (host, port, client key path); the key is the only one sshd accepts. `also`: more loopback addresses
    the same sshd listens on, on the same port, so that one machine serves as several workers. `env`: variables set in
    every session (sshd's SetEnv), the way a worker's own environment would set them. Sessions get PIP_NO_INDEX=1:
    NNI runs `pip install nni --upgrade` on every worker, which would otherwise reach for PyPI (slowly, offline); and
    PYENV_REHASH_TIMEOUT=1: where the login shell runs `pyenv init`, a session killed mid-rehash (kill_host) leaves
    pyenv's lock behind and every later login would wait 60 s for it."""
    env = {"PIP_NO_INDEX": "1", "PYENV_REHASH_TIMEOUT": "1", **(env or {})}
    tmp.mkdir(parents=True, exist_ok=True)
    host_key = keygen(tmp / "host_key")
    client_key = keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    port = _free_port(host)
    config = tmp / "sshd_config"
    listen = "".join(f"ListenAddress {h}\n" for h in (host, *also))
    if env:
        listen += "SetEnv " + " ".join(f'"{k}={v}"' for k, v in env.items()) + "\n"
    config.write_text(f"""Port {port}
{listen}HostKey {host_key}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
    Path("/run/sshd").mkdir(exist_ok=True)   # privilege-separation directory Debian's sshd insists on
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(tmp / "sshd.log", "w"))
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()}")
                time.sleep(0.1)
        yield host, port, client_key
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ppid(pid: int) -> int | None:
    try:
        # the name field may hold spaces and parentheses: the fields after its last ")" are fixed
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def started_through(sshd_pid: int, host: str, port: int) -> set[int]:
    """Pids of the sshd `sshd_pid`, its sessions (descendants) and every process a login through it started, also
    those that left the session (a daemon's SSH_CONNECTION still names this server's address and port)."""
    server = f" {host} {port}"
    pids, parents = set(), {}
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        parents[pid] = _ppid(pid)
        if _environ(pid).get("SSH_CONNECTION", "").endswith(server):
            pids.add(pid)
    for pid in parents:
        chain, p = [], pid
        while p and p not in chain:     # walk up: a descendant of the sshd belongs to it
            if p == sshd_pid:
                pids.add(pid)
                break
            chain.append(p)
            p = parents.get(p)
    return pids


def kill_host(sshd_pid: int, host: str, port: int) -> dict[int, tuple[str, dict[str, str]]]:
    """SIGKILL a worker like a machine dying: the sshd, its sessions and all they started (trial keeper daemons and
    trials included). Everything is frozen with SIGSTOP first, until no new process appears, so what is returned
    (pid -> (command line, environment) of the processes that were alive, not zombies) is exactly what was killed."""
    frozen: dict[int, tuple[str, dict[str, str]]] = {}
    while True:
        new = started_through(sshd_pid, host, port) - set(frozen)
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmdline = ""
            frozen[pid] = (cmdline.strip(), _environ(pid))
    for pid in set(frozen) - started_through(sshd_pid, host, port):   # exited, and its pid reused meanwhile
        del frozen[pid]
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    alive = {}
    for pid, info in frozen.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive[pid] = info
    return alive


def tiny_remote_config(tmp_path: Path, data: Path, workers: list[tuple[str, int, Path]], space: dict, epochs: int,
                       **overrides) -> dict:
    """The NNI config experiments.launch writes for these private-sshd workers ((host, port, client key) each), for
    tiny trials on `data`: every worker runs this interpreter; no assessor."""
    import getpass
    import json
    import sys

    import yaml

    from experiments.launch import remote as launch
    repo = Path(__file__).resolve().parent.parent
    spec = {"manager_ip": "127.0.0.1", "data_dir": str(data), "workers": [
        {"host": h, "port": port, "user": getpass.getuser(), "key_file": str(key), "python": sys.executable}
        for h, port, key in workers]}
    (tmp_path / "workers.yml").write_text(yaml.safe_dump(spec))
    (tmp_path / "space.json").write_text(json.dumps(space))
    config = launch.remote_config(repo / "nni_configs" / "mnist.yml", launch.load_workers(tmp_path / "workers.yml"),
                                  "127.0.0.1")
    # remote trials do not inherit the manager's environment: the cache goes in the command
    config["trialCommand"] = (f"CNNSEARCH_CACHE={tmp_path / 'cache'} CNNSEARCH_NO_DOWNLOAD=1 "
                              f"{config['trialCommand']} --epochs {epochs} --train_subset 256 --val_size 128 "
                              f"--batch_size 64")
    config.update(searchSpaceFile=str(tmp_path / "space.json"), trialConcurrency=2, maxExperimentDuration="8m",
                  experimentWorkingDirectory=str(tmp_path / "nni-experiments"), **overrides)
    config.pop("assessor", None)
    return config
