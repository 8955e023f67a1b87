"""A private sshd on a loopback address: a real SSH worker for tests. Its own host key, key-only login, a spare port;
stopped by its own pid."""
from __future__ import annotations

import os
import shutil
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
def private_sshd(tmp: Path, host: str = "127.0.0.2", also: tuple[str, ...] = ()):
    """Yields (host, port, client key path); the key is the only one sshd accepts. `also`: more loopback addresses
    the same sshd listens on, on the same port, so that one machine serves as several workers."""
    tmp.mkdir(parents=True, exist_ok=True)
    host_key = keygen(tmp / "host_key")
    client_key = keygen(tmp / "client_key")
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    os.chmod(tmp / "authorized_keys", 0o600)
    port = _free_port(host)
    config = tmp / "sshd_config"
    listen = "".join(f"ListenAddress {h}\n" for h in (host, *also))
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
