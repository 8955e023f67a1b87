"""The dashboard and REST API answer on loopback only (experiments/loopback.js, loaded the way experiments.secure and
our launchers load it), proved with real requests from another address of this machine: a network namespace this test
creates, joined to the host by a veth pair on a private /30 (10.231.N.0/30, removed at the end).

From inside the namespace, reading the experiment, changing its search space and deleting it are refused on every
address of the machine, while the same requests over 127.0.0.1 work; without the preload the namespace reaches the API
(so the refusals are the preload's doing); `/netron/` (NNI proxies it to the internet) is refused and the manager
stays up; remote trials report through `nniManagerIp`, which serves them and nothing else. No traffic leaves the
machine: requests go to loopback or between the host and the namespace. About 70 s on a busy 2-core CPU.

    .venv/bin/pytest tests/test_security.py -q       # as root, with iproute2 (ip netns) and openssh-server
"""
from __future__ import annotations

import getpass
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from experiments.launch import remote as launch
from experiments.launch import secure
from tests import sshd, tiny_data
from tests.nni_helpers import (
    REPO,
    config_from,
    experiment_env,
    nnictl_path,
    running_experiment,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.nni, pytest.mark.netns,
              pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed (pip install -r requirements.txt)")]

TINY = "--epochs 2 --train_subset 256 --val_size 128 --batch_size 64"
REFUSED = {"ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH"}
NEW_SPACE = {"filters": {"_type": "choice", "_value": [8]}}

# runs inside the namespace: one HTTP request per item, the status and body or the socket error's name
CLIENT = r"""
import errno, http.client, json, sys
out = []
for r in json.loads(sys.argv[1]):
    try:
        conn = http.client.HTTPConnection(r["host"], r["port"], timeout=5)
        conn.request(r["method"], r["path"], body=r.get("body"), headers=r.get("headers", {}))
        resp = conn.getresponse()
        out.append({"status": resp.status, "body": resp.read(100000).decode(errors="replace")})
    except OSError as err:
        out.append({"error": errno.errorcode.get(err.errno, type(err).__name__)})
print(json.dumps(out))
"""


@dataclass
class Namespace:
    name: str
    host_ip: str      # this machine's end of the veth pair
    ns_ip: str

    def requests(self, requests: list[dict]) -> list[dict]:
        """Send the requests from inside the namespace; each result is {"status", "body"} or {"error": errno name}."""
        proc = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", CLIENT, json.dumps(requests)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return [{**r, **out} for r, out in zip(requests, json.loads(proc.stdout))]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (apt-get install iproute2)")
    tag = f"cs{os.getpid() % 100000}"
    name, host_if, ns_if = tag, f"{tag}h", f"{tag}n"
    subnet = 20 + os.getpid() % 200
    ns = Namespace(name, f"10.231.{subnet}.1", f"10.231.{subnet}.2")
    try:
        _ip("netns", "add", name)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        for command in (("addr", "add", f"{ns.ns_ip}/30", "dev", ns_if), ("link", "set", ns_if, "up"),
                        ("link", "set", "lo", "up"), ("route", "add", "default", "via", ns.host_ip)):
            _ip("netns", "exec", name, "ip", *command)
    except subprocess.CalledProcessError as err:
        _ip("link", "del", host_if, check=False)
        _ip("netns", "del", name, check=False)
        pytest.skip(f"cannot create a network namespace with a veth pair here: {err.stderr.strip()}")
    try:
        yield ns
    finally:
        _ip("link", "del", host_if, check=False)     # takes its peer in the namespace with it
        _ip("netns", "del", name, check=False)


def machine_addresses(ns: Namespace) -> list[str]:
    """Every IPv4 address of this machine that is not loopback: the veth end and the real interfaces."""
    out = _ip("-4", "-o", "addr", "show").stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line]
    return sorted({a for a in found if not a.startswith("127.")} | {ns.host_ip})


def api_requests(address: str, port: int) -> list[dict]:
    """Read the experiment, replace its search space, delete it (NNI's own client sends the same)."""
    body = json.dumps({"params": {"searchSpace": NEW_SPACE}})
    return [{"host": address, "port": port, "method": "GET", "path": "/api/v1/nni/experiment"},
            {"host": address, "port": port, "method": "PUT", "path": "/api/v1/nni/experiment?update_type=SEARCH_SPACE",
             "body": body, "headers": {"Content-Type": "application/json"}},
            {"host": address, "port": port, "method": "DELETE", "path": "/api/v1/nni/experiment"}]


def loopback(port: int, method: str, path: str, body: bytes | None = None, host: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    headers = {"Content-Type": "application/json"} if body else {}
    if host:
        headers["Host"] = host
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")


def update_search_space(port: int, space: dict) -> int:
    """What nni.experiment.Experiment.update_search_space sends: the profile with params.searchSpace replaced."""
    _, profile = loopback(port, "GET", "/api/v1/nni/experiment")
    profile = json.loads(profile)
    profile["params"]["searchSpace"] = space
    status, _ = loopback(port, "PUT", "/api/v1/nni/experiment?update_type=SEARCH_SPACE", json.dumps(profile).encode())
    return status


def tiny_local_config(tmp_path: Path, trials: int) -> Path:
    config = config_from("mnist.yml", tmp_path, maxTrialNumber=trials, trialConcurrency=1, maxExperimentDuration="4m")
    config["trialCommand"] += f" {TINY}"
    config.pop("assessor", None)
    return write_config(tmp_path / "local.yml", config)


def stderr_log(exp) -> str:
    return (exp.root / "log" / "nnictl_stderr.log").read_text(errors="replace")


@pytest.mark.timeout(240, method="signal")
def test_other_addresses_are_refused_and_loopback_works(tmp_path, netns):
    data = tiny_data.write_all(tmp_path / "data")
    env = experiment_env(tmp_path, data)                   # protected: as our launchers start NNI
    with running_experiment(tiny_local_config(tmp_path, trials=1), env) as exp:
        space = json.loads(loopback(exp.port, "GET", "/api/v1/nni/experiment")[1])["params"]["searchSpace"]
        addresses = machine_addresses(netns)
        attempts = [r for a in addresses for r in api_requests(a, exp.port)]
        attempts += [{"host": a, "port": exp.port + 1, "method": "GET", "path": "/"} for a in addresses]
        results = netns.requests(attempts)
        assert all(r.get("error") in REFUSED for r in results), [r for r in results if r.get("error") not in REFUSED]

        # the experiment is untouched, and the same requests over loopback work
        status, body = loopback(exp.port, "GET", "/api/v1/nni/experiment")
        assert status == 200 and json.loads(body)["id"] == exp.id
        assert json.loads(body)["params"]["searchSpace"] == space
        assert exp.status()["status"] == "RUNNING"
        # a page whose DNS name was rebound to 127.0.0.1 is refused by its Host
        status, body = loopback(exp.port, "GET", "/api/v1/nni/experiment", host="attacker.example:80")
        assert status == 403 and "not a loopback name" in body

        # /netron/ would make the manager fetch https://netron.app (offline that kills it): refused, nothing fetched
        for path in ("/netron/index.html?url=http://127.0.0.1/trial-file/x/model.onnx", "/Netron",
                     f"http://127.0.0.1:{exp.port}/netron/"):          # the last in absolute form
            status, body = loopback(exp.port, "GET", path)
            assert status == 403 and "netron" in body, (status, body)
        assert exp.status()["status"] == "RUNNING"

        # the local trial reported every epoch through the loopback-only port
        trials = exp.wait_for_trials(1, timeout=150)
        assert [t["status"] for t in trials] == ["SUCCEEDED"], exp.logs()
        finals, periodical = exp.final_and_intermediate(trials[0]["trialJobId"])
        assert len(finals) == 1 and len(periodical) == 2

        assert update_search_space(exp.port, NEW_SPACE) == 200        # loopback may change the search space
        assert json.loads(loopback(exp.port, "GET", "/api/v1/nni/experiment")[1])["params"]["searchSpace"] == NEW_SPACE
        log = stderr_log(exp)
        assert f"dashboard and REST API on 127.0.0.1:{exp.port} only" in log
        assert "refused GET /netron/" in log


@pytest.mark.timeout(120, method="signal")
def test_without_the_preload_the_namespace_reaches_the_api(tmp_path, netns):
    # the control: NNI's own behaviour, so the refusals above are the preload's doing and this setup can see them
    config = {"searchSpace": {"x": {"_type": "choice", "_value": [1]}}, "trialCommand": "sleep 60",
              "trialCodeDirectory": str(tmp_path), "trialConcurrency": 1, "maxTrialNumber": 1,
              "maxExperimentDuration": "2m", "experimentWorkingDirectory": str(tmp_path / "nni-experiments"),
              "tuner": {"name": "Random"}, "trainingService": {"platform": "local"}}
    env = experiment_env(tmp_path, tmp_path, protect=False)
    with running_experiment(write_config(tmp_path / "open.yml", config), env) as exp:
        wait_until(exp.trials, 60, 0.5, "the tuner's first trial")   # before that NNI refuses a new search space
        read, update, _ = api_requests(netns.host_ip, exp.port)
        got, changed = netns.requests([read, update])
        assert got.get("status") == 200 and json.loads(got["body"])["id"] == exp.id, got
        assert changed.get("status") == 200, changed
        now = json.loads(loopback(exp.port, "GET", "/api/v1/nni/experiment")[1])["params"]["searchSpace"]
        assert now == NEW_SPACE          # a stranger on the network changed the search space
        assert "cnnsearch loopback.js" not in stderr_log(exp)


@pytest.mark.skipif(sshd.available() is not None, reason=str(sshd.available()))
@pytest.mark.timeout(300, method="signal")
def test_remote_trials_report_through_the_manager_ip_that_serves_nothing_else(tmp_path, netns):
    # nniManagerIp is the veth address, as a real manager's LAN address would be: the worker's trials connect back
    # to it, the dashboard and the REST API stay on loopback, and the namespace (another host) gets nothing there
    data = tiny_data.write_all(tmp_path / "data")
    with sshd.private_sshd(tmp_path / "sshd", "127.0.0.2") as (host, port, key):
        workers = {"manager_ip": netns.host_ip, "data_dir": str(data), "workers": [
            {"host": host, "port": port, "user": getpass.getuser(), "key_file": str(key), "python": sys.executable}]}
        (tmp_path / "workers.yml").write_text(yaml.safe_dump(workers))
        config = launch.remote_config(REPO / "nni_configs" / "mnist.yml", launch.load_workers(tmp_path / "workers.yml"),
                                      netns.host_ip)
        (tmp_path / "space.json").write_text(json.dumps({"filters": {"_type": "choice", "_value": [8, 16]}}))
        config["trialCommand"] = (f"CNNSEARCH_CACHE={tmp_path / 'cache'} CNNSEARCH_NO_DOWNLOAD=1 "
                                  f"{config['trialCommand']} {TINY}")
        config.update(searchSpaceFile=str(tmp_path / "space.json"), maxTrialNumber=2, trialConcurrency=1,
                      maxExperimentDuration="4m", experimentWorkingDirectory=str(tmp_path / "nni-experiments"))
        config.pop("assessor", None)
        env = secure.nni_env(experiment_env(tmp_path, data), manager_ip=netns.host_ip)   # as experiments.launch does
        assert env[secure.TRIAL_IP] == netns.host_ip
        worker_side = None
        try:
            with running_experiment(write_config(tmp_path / "remote.yml", config), env) as exp:
                worker_side = Path.home() / "nni-experiments" / exp.id    # same machine, sshd's user
                door = netns.host_ip
                attempts = api_requests(door, exp.port) + [
                    {"host": door, "port": exp.port, "method": "GET", "path": "/"},
                    {"host": door, "port": exp.port, "method": "GET", "path": "/tuner", "headers": {
                        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}}]
                others = [a for a in machine_addresses(netns) if a != door]
                attempts += [r for a in others for r in api_requests(a, exp.port)]
                attempts += [{"host": a, "port": exp.port + 1, "method": "GET", "path": "/"}
                             for a in machine_addresses(netns)]
                for r in netns.requests(attempts):
                    if r["host"] == door and r["port"] == exp.port:
                        assert r.get("status") == 403 and r["body"].startswith("cnnsearch:"), r
                    else:
                        assert r.get("error") in REFUSED, r
                assert exp.status()["status"] == "RUNNING"

                trials = exp.wait_for_trials(2, timeout=200)
                assert [t["status"] for t in trials] == ["SUCCEEDED"] * 2, exp.logs()
                for t in trials:
                    finals, periodical = exp.final_and_intermediate(t["trialJobId"])
                    assert len(finals) == 1 and len(periodical) == 2
                log = stderr_log(exp)
                assert f"remote trial channels (/platform/... only) on {door}:{exp.port}" in log
                # they came in through the door
                assert re.search(rf"trial channel /platform/\S+ from \S+ on {re.escape(door)}\n", log), log
                assert update_search_space(exp.port, NEW_SPACE) == 200                  # loopback still works
        finally:
            if worker_side is not None:     # after the stop: the worker's trial keeper writes there until then
                shutil.rmtree(worker_side, ignore_errors=True)
