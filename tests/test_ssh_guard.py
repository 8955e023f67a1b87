"""experiments/ssh_guard.js: an SSH connection reset by a dying worker no longer kills NNI's manager. NNI's own node and
ssh2 client meet a server on 127.0.0.1 that resets the connection; without the preload node dies of the unhandled
'error' event (what NNI 3.0's remote training service does), with it the client just closes."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from experiments.launch import secure

nni_node = pytest.importorskip("nni_node")
NODE_DIR = Path(nni_node.__path__[0])
NODE = NODE_DIR / "node"
# what NNI's ssh.js does: a Client, connect, and nothing listening for 'error'
CLIENT = """
const { Client } = require('ssh2');
const client = new Client();
client.on('close', () => { console.log('client closed'); });
client.connect({ host: '127.0.0.1', port: Number(process.argv[1]), username: 'nobody', readyTimeout: 10000 });
"""


def resetting_server() -> tuple[int, threading.Thread]:
    """A one-shot server: it reads the client's first bytes, then resets the connection (SO_LINGER 0)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(20)

    def serve():
        with server:
            conn, _ = server.accept()
            conn.recv(64)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def run_client(node_options: str) -> subprocess.CompletedProcess:
    port, thread = resetting_server()
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules"), "NODE_OPTIONS": node_options}
    proc = subprocess.run([str(NODE), "-e", CLIENT, str(port)], env=env, capture_output=True, text=True,
                          timeout=60)
    thread.join(timeout=5)
    return proc


@pytest.mark.skipif(not NODE.exists(), reason="NNI's node binary is not installed")
def test_a_reset_ssh_connection_no_longer_kills_the_process():
    bare = run_client("")
    assert bare.returncode != 0 and "Unhandled 'error' event" in bare.stderr and "ECONNRESET" in bare.stderr, bare

    guarded = run_client(secure.node_options(""))
    assert guarded.returncode == 0, guarded
    assert "client closed" in guarded.stdout
    assert "cnnsearch ssh_guard.js: SSH connection to 127.0.0.1:" in guarded.stderr
    assert "ECONNRESET (handled" in guarded.stderr
