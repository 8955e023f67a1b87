"""NNI's dashboard, opened in a real headless browser (Debian's chromium) through the loopback address, shows a tiny
experiment's trials with their final and intermediate metrics.

A real local experiment (started as our launchers start NNI: dashboard on 127.0.0.1 only) runs two trials of three
epochs; chromium, driven through its DevTools protocol, opens the Trials detail page, which must list every trial id
with its status and final metric and, under "Intermediate result", plot each trial's per-epoch values (read from the
chart the page drew). The screenshot is kept in test-artifacts/dashboard/ (or $CNNSEARCH_TEST_ARTIFACTS). The browser
reaches nothing but 127.0.0.1: a closed local proxy and resolver rules stop everything else (the dashboard asks a
Microsoft CDN for its icon fonts). About 40 s on a busy 2-core CPU.

    .venv/bin/pytest tests/test_dashboard.py -q       # needs chromium: apt-get install chromium
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from websockets.sync.client import connect  # websockets comes with nni

from tests import tiny_data
from tests.nni_helpers import REPO, config_from, experiment_env, nnictl_path, running_experiment, write_config

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
pytestmark = [
    pytest.mark.browser, pytest.mark.nni,
    pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed (pip install -r requirements.txt)"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it: apt-get install "
                                                "chromium)"),
]
ARTIFACTS = Path(os.environ.get("CNNSEARCH_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
EPOCHS = 3

# the page's visible echarts instances, found through React's fiber of each chart element (echarts-for-react)
CHARTS = """Array.from(document.querySelectorAll('[_echarts_instance_]')).map(el => {
    const key = Object.keys(el).find(k => k.startsWith('__reactFiber'));
    let fiber = key && el[key];
    while (fiber && !(fiber.stateNode && fiber.stateNode.getEchartsInstance)) fiber = fiber.return;
    return fiber && el.offsetWidth !== 0 ? fiber.stateNode.getEchartsInstance() : null;
}).filter(Boolean)"""
# the series they draw, and whether they are still (zrender's animation loop has no animator left: the lines are in)
CHART_SERIES = f"(() => ({CHARTS}).map(chart => (chart.getOption().series || []).map(s => [s.name, s.data])))()"
CHARTS_STILL = f"(() => ({CHARTS}).every(chart => chart.getZr().animation.isFinished()))()"
TABLE_ROWS = "Array.from(document.querySelectorAll('.ms-DetailsRow')).map(row => row.innerText)"
CLICK_TAB = """(() => { const tab = Array.from(document.querySelectorAll('[role=tab]'))
    .find(t => t.innerText.includes(%s)); if (tab) tab.click(); return Boolean(tab); })()"""


class DevTools:
    """The few DevTools protocol calls this test needs, over the page target's WebSocket."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.requests: dict[str, str] = {}       # request id -> URL
        self.responses: list[str] = []           # URLs that got an answer

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            event = message.get("method")
            if event == "Network.requestWillBeSent":
                self.requests[message["params"]["requestId"]] = message["params"]["request"]["url"]
            elif event == "Network.responseReceived":
                self.responses.append(message["params"]["response"]["url"])
            elif message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.3)
        text = self.evaluate("document.body ? document.body.innerText : ''")
        raise TimeoutError(f"the dashboard did not show {what} in {timeout:.0f} s; page text:\n{text}")


@contextmanager
def headless_chromium(profile: Path):
    """chromium with its own profile, a DevTools port on 127.0.0.1, and no way out: a closed local proxy for every
    non-loopback URL, no name resolution but 127.0.0.1, no background services. Stopped by its pid."""
    profile.mkdir(parents=True)
    log = open(profile / "chromium.log", "w")
    proc = subprocess.Popen([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--no-default-browser-check", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--window-size=1400,1000", "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND , "
        "EXCLUDE 127.0.0.1", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--mute-audio", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and len(active.read_text().split()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start:\n{(profile / 'chromium.log').read_text()[-3000:]}")
            time.sleep(0.2)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            yield DevTools(ws)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # its own session: renderer and zygote children it left, if any
        except ProcessLookupError:
            pass
        log.close()


def check_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.width >= 800 and image.height >= 600, image.size
    gray = image.convert("L")
    lo, hi = gray.getextrema()
    assert hi - lo > 100, "the screenshot is blank"
    assert len(set(gray.resize((200, 150)).tobytes())) > 20, "the screenshot is nearly uniform"
    return image


@pytest.mark.timeout(300, method="signal")
def test_the_dashboard_shows_the_trials_and_their_metrics(tmp_path):
    data = tiny_data.write_all(tmp_path / "data")
    # two learning rates slow enough that the tiny data's accuracy climbs over the epochs: two distinct curves
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"_type": "choice", "_value": [1e-4, 3e-4]}}))
    config = config_from("mnist.yml", tmp_path, searchSpaceFile=str(space), tuner={"name": "GridSearch"},
                         maxTrialNumber=2, trialConcurrency=2, maxExperimentDuration="4m")
    config["trialCommand"] += f" --epochs {EPOCHS} --train_subset 256 --val_size 128 --batch_size 64"
    config.pop("assessor", None)
    env = experiment_env(tmp_path, data, OMP_NUM_THREADS="1")
    with running_experiment(write_config(tmp_path / "dashboard.yml", config), env) as exp:
        trials = exp.wait_for_trials(2, timeout=180)
        assert [t["status"] for t in trials] == ["SUCCEEDED"] * 2, exp.logs()
        truth = {}
        for t in trials:
            finals, periodical = exp.final_and_intermediate(t["trialJobId"])
            assert len(finals) == 1 and len(periodical) == EPOCHS
            truth[t["trialJobId"]] = (finals[0]["value"]["default"], [r["value"]["default"] for r in periodical])

        with headless_chromium(tmp_path / "chromium") as page:
            page.call("Network.enable")
            page.call("Page.enable")
            page.call("Page.navigate", url=f"http://127.0.0.1:{exp.port}/detail")
            ids = json.dumps(sorted(truth))
            page.wait_for(f"(() => {{ const text = document.body ? document.body.innerText : '';"
                          f" return {ids}.every(id => text.includes(id)); }})()", 60, "every trial id")
            rows = page.evaluate(TABLE_ROWS)
            assert page.evaluate(CLICK_TAB % json.dumps("Intermediate result")), "no 'Intermediate result' tab"
            series = page.wait_for(CHART_SERIES, 30, "the intermediate-result chart")
            page.wait_for(CHARTS_STILL, 30, "the chart's lines animated in")
            shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
            text = page.evaluate("document.body.innerText")
            page.call("Network.disable")
            requests, responses = dict(page.requests), list(page.responses)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "trials-detail.png").write_bytes(shot)
    (ARTIFACTS / "trials-detail.txt").write_text(text)
    check_png(shot)

    # the table: one row per trial, with its id, SUCCEEDED and its final metric
    for trial_id, (final, _) in truth.items():
        row = next((r for r in rows if trial_id in r), None)
        assert row is not None, f"no row for trial {trial_id} in {rows}"
        assert "SUCCEEDED" in row
        shown = re.search(r"(\d+(?:\.\d+)?) \(FINAL\)", row)
        assert shown and abs(float(shown.group(1)) - final) < 1e-6, (row, final)
    # the chart: each trial's intermediate results, epoch by epoch
    plotted = {name: values for chart in series for name, values in chart}
    assert set(plotted) == set(truth), plotted
    for trial_id, (_, intermediate) in truth.items():
        assert [float(v) for v in plotted[trial_id]] == pytest.approx(intermediate), (trial_id, plotted[trial_id])

    # everything the page loaded came from the manager on 127.0.0.1; what else it asked for got nowhere
    origin = f"http://127.0.0.1:{exp.port}/"
    assert any(url.startswith(origin + "api/v1/nni/") for url in responses)
    assert all(url.startswith((origin, "data:", "blob:")) for url in responses), responses
    elsewhere = sorted({url.split("/")[2] for url in requests.values() if url.startswith("http")
                        and not url.startswith(origin)})
    print(f"\nscreenshot: {ARTIFACTS / 'trials-detail.png'}; blocked requests to {elsewhere or 'nothing'}")
