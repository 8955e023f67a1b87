"""Outputs under failure: each file is written whole or not at all (a temporary file, then a rename; final.json last),
a full disk or a read-only folder is one line naming the path and the cause, and a trial stopped by Ctrl-C (SIGINT)
or SIGTERM keeps what it trained, says where, and dies by that signal (a shell sees 130 or 143). The full and read-only disks are small tmpfs
mounts (the tests run as root, which chmod would not stop; skipped where mounting is not allowed).

    .venv/bin/pytest tests/test_outputs.py -q
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.results import export, report
from experiments.results import retrain as retrain_mod
from experiments.results.evaluate import export_model, load_checkpoint
from experiments.results.retrain import finished_run
from tests.conftest import REPO
from tests.test_report import _fake_experiment
from trial import adapter
from trial import data as data_mod
from trial.config import SMOKE, resolve
from trial.files import OutputError, write_files
from trial.model import build_model
from trial.train import train


def trial_command(out: Path, *args) -> list[str]:
    return [sys.executable, "-m", "trial", "--dataset", "mnist", "--threads", "1", "--output-dir", str(out),
            *map(str, args)]


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else True


@pytest.fixture
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs folder (unmounted after the test): a disk that fills at its size, or one that
    is read-only. Skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN, no mount binary)."""
    mounted: list[Path] = []

    def mount(options: str = "size=64k") -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                                  text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("no mount command here: cannot make a small disk")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], capture_output=True, timeout=30)


def test_write_files_leaves_the_previous_files_when_one_cannot_be_written(tmp_path):
    for name in ("config.json", "best.pt", "final.json"):
        (tmp_path / name).write_text(f"old {name}")

    def disk_full(path: Path):
        path.write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(OutputError) as err:
        write_files({tmp_path / "config.json": "new", tmp_path / "best.pt": disk_full, tmp_path / "final.json": "{}"})
    assert str(err.value) == f"cannot write {tmp_path / 'best.pt'}: No space left on device"
    # nothing replaced (config.json was staged, not renamed), nothing half-written left behind
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == \
        {n: f"old {n}" for n in ("config.json", "best.pt", "final.json")}
    # all staged: renamed in order, final.json last
    renamed = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append(Path(dst).name)
        real_replace(src, dst)
    os.replace = replace
    try:
        write_files({tmp_path / "config.json": "new", tmp_path / "best.pt": b"\x00", tmp_path / "final.json": "{}"})
    finally:
        os.replace = real_replace
    assert renamed == ["config.json", "best.pt", "final.json"] and (tmp_path / "final.json").read_text() == "{}"
    assert no_temporary_files(tmp_path)


def test_a_file_where_the_output_folder_should_be_is_one_line_before_training(tiny_root, tmp_path, monkeypatch,
                                                                             capsys):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    monkeypatch.setattr(data_mod, "prepare", lambda *a, **k: pytest.fail("data prepared: the check came too late"))
    line = f"cannot create folder {blocker / 'run'}: {blocker} is a file, not a folder"
    with pytest.raises(OutputError, match=line):
        train(resolve({"dataset": "mnist", **SMOKE}), output_dir=blocker / "run")
    monkeypatch.delenv("NNI_PLATFORM", raising=False)
    assert adapter.main(["--dataset", "mnist", "--smoke", "--output-dir", str(blocker / "run")]) == 1
    assert capsys.readouterr().err == f"error: {line}\n"


def test_a_read_only_output_folder_is_one_line_naming_the_path(tiny_root, tmpfs, monkeypatch, capsys):
    disk = tmpfs("size=64k")
    (disk / "run").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
    monkeypatch.setattr(data_mod, "prepare", lambda *a, **k: pytest.fail("data prepared: the check came too late"))
    with pytest.raises(OutputError, match=f"cannot write {disk / 'run' / 'config.json'}: Read-only file system"):
        train(resolve({"dataset": "mnist", **SMOKE}), output_dir=disk / "run")
    monkeypatch.delenv("NNI_PLATFORM", raising=False)
    assert adapter.main(["--dataset", "mnist", "--smoke", "--output-dir", str(disk / "run")]) == 1
    assert capsys.readouterr().err == f"error: cannot write {disk / 'run' / 'trial.json'}: Read-only file system\n"


def test_a_full_disk_leaves_no_truncated_checkpoint_and_no_final_json(tiny_root, tmpfs, torch_one_thread,
                                                                      monkeypatch, capsys):
    """`python -m trial --smoke` (in this process): the checkpoint (about 850 kB) does not fit a 64 kB disk. Before, a
    traceback after training and a truncated best.pt beside a complete final.json; now one line, and neither file."""
    disk = tmpfs("size=64k")
    out = disk / "run"
    monkeypatch.delenv("NNI_PLATFORM", raising=False)
    assert adapter.main(["--dataset", "mnist", "--smoke", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: cannot write {out / 'best.pt'}: No space left on device", err
    assert not (out / "best.pt").exists() and not (out / "final.json").exists() and no_temporary_files(out)
    # what was written is whole: the config before training, the metrics after the epoch
    assert resolve(json.loads((out / "config.json").read_text())).train_subset == SMOKE["train_subset"]
    assert len([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_trial_keeps_what_it_trained_and_says_where(tiny_root, tmp_path, sig):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNI_")}
    proc = subprocess.Popen(trial_command(out, "--val_size", "128", "--epochs", "1000", "--filters", "8",
                                          "--dense_units", "16", "--batch_size", "64", "--lr_schedule", "constant",
                                          "--patience", "0"),   # no early stop before the signal comes
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a suite started as a background job (`cmd &` in a script) passes SIGINT on ignored,
                            # and a trial rightly leaves an ignored signal alone: the child starts as a terminal's would
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no epoch finished in 180 s"
            time.sleep(0.05)                     # polling for the event: the first epoch's line
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # it dies by the signal (a shell sees 128 + n): NNI 3.0 records a non-zero exit code as FAILED, a death by signal
    # as the EARLY_STOPPED or USER_CANCELED it was
    assert proc.returncode == -sig, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"[train] stopped by {sig.name} after ") and str(out / "best.pt") in last, stderr
    final = json.loads((out / "final.json").read_text())
    assert final["interrupted"] == sig.name and final["epochs_run"] >= 1 and "test_accuracy" not in final
    assert f"validation accuracy {final['best_val_accuracy']:.4f}" in last
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == final["epochs_run"]
    model, cfg = load_checkpoint(out / "best.pt")          # the best weights so far, loadable alone
    assert cfg.filters == 8 and final["best_epoch"] >= 1
    assert no_temporary_files(out)
    # a report never takes an interrupted run for a finished one
    (out / "test_metrics.json").write_text("{}")
    (out / "test_predictions.npz").write_bytes(b"")
    assert finished_run(out, json.loads((out / "config.json").read_text())) is None


BASELINE = str(REPO / "baselines" / "simple_cnn.json")
# the commands whose outputs come after minutes of work: each must refuse an unwritable --out before that work
COMMANDS = {
    "report": lambda out, nni: report.main(["--winner", BASELINE, "--baseline", BASELINE, "--smoke", "--seeds", "0",
                                       "--out", str(out)]),
    "retrain": lambda out, nni: retrain_mod.main([BASELINE, "--dataset", "mnist", "--smoke", "--seeds", "0",
                                             "--out", str(out)]),
    "export": lambda out, nni: export.main(["fake1234", "--root", str(nni), "--out", str(out / "trials.csv")]),
}


@pytest.fixture(params=["file-in-the-way", "read-only"])
def unwritable(request, tmp_path):
    """(an --out folder that cannot be written, the cause its one line must give, a check that nothing was lost):
    a file where a folder of the path should be, or a folder on a read-only disk (a tmpfs: root ignores chmod 555)
    holding an earlier output."""
    if request.param == "file-in-the-way":
        blocker = tmp_path / "results"
        blocker.write_text("an earlier file")
        return blocker / "out", f"{blocker} is a file, not a folder", lambda: blocker.read_text() == "an earlier file"
    disk = request.getfixturevalue("tmpfs")("size=64k")
    (disk / "out").mkdir()
    (disk / "out" / "summary.json").write_text("{}")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
    return disk / "out", "Read-only file system", lambda: [p.name for p in (disk / "out").iterdir()] == ["summary.json"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unwritable_out_folder_is_one_line_before_any_work(tiny_root, tmp_path, monkeypatch, capsys, unwritable,
                                                              command):
    """`python -m experiments.report` / `experiments.results.retrain` / `experiments.results.export` with --out where
    nothing can be written: one line naming the path and the cause, exit 2, nothing lost, and no data prepared (the
    retraining would come next). Before, the report and the retraining on a read-only folder prepared the data and
    failed at the first seed's folder, and a file in the way was "Not a directory" or (export) "File exists", naming
    neither that file nor the fix."""
    out, cause, intact = unwritable
    _fake_experiment(tmp_path / "nni", 9000)
    monkeypatch.setattr(data_mod, "prepare", lambda *a, **k: pytest.fail("data prepared: the check came too late"))
    assert COMMANDS[command](out, tmp_path / "nni") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot ") and str(out) in err and cause in err, err
    assert intact()


def test_an_unwritable_export_folder_is_refused_before_the_export(tmp_path, monkeypatch, unwritable):
    """evaluate.export_model (a report's model/ folder): refused before torch.export and the ONNX check run."""
    out, cause, intact = unwritable
    cfg = resolve({"dataset": "mnist", "filters": 8, "dense_units": 16})
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: pytest.fail("exported: the check came too late"))
    with pytest.raises(OutputError, match=f"cannot (create|write in) folder {out}: {cause}"):
        export_model(build_model(cfg, (1, 28, 28)), cfg, out)
    assert intact()
