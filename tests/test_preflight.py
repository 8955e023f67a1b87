"""The pre-flight check (`python -m experiments.check`) and what the secure starter does with it: a doomed experiment
is refused before anything starts (a space, command or tuner that cannot work; a tuner that would minimize accuracy;
a trial interpreter without torch; GPUs that are not there; a taken port; a code directory without the trial package
as NNI resolves it; `--epochs` under Hyperband's budget; a working directory that cannot be written), every space
NNI loads is accepted, a tuner that dies anyway is reported with its error and stopped, the printed dashboard address
is one that answers. Field cases c01 and c13 (../shared/field_cases); c13 in a real experiment. The starters' own
real-experiment tests are in tests/test_starters.py.

    .venv/bin/pytest tests/test_preflight.py -q
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.launch import secure
from experiments.launch.check import _port_problem, _visible_gpus, check, dispatcher_error
from experiments.tuners import TUNERS_DIR
from tests import tiny_data
from tests.conftest import FIELD_CASES, needs_field_cases
from tests.nni_helpers import (
    bare_python,
    config_from,
    experiment_env,
    free_port,
    nnictl_path,
    processes_with,
    wait_until,
    write_config,
)
from trial import REPO

SHIPPED = sorted(p.name for p in (REPO / "nni_configs").glob("*.yml"))
C13 = {"learning_rate": {"_type": "uniform", "_value": [0.001, 0.00001]}}
HYPERBAND = {"codeDirectory": str(TUNERS_DIR), "className": "fixed_hyperband.FixedHyperband",
             "classArgs": {"optimize_mode": "maximize", "R": 3, "eta": 3}}


@pytest.fixture(autouse=True)
def trials_find_this_python(monkeypatch):
    """Local trials run `python` from the PATH they inherit: here this interpreter's, as in an activated
    virtualenv (the check refuses a `python` without torch and nni)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_passes(name):
    report = check(REPO / "nni_configs" / name, draws=60)
    if "trialGpuNumber" in yaml.safe_load((REPO / "nni_configs" / name).read_text()) and not _visible_gpus()[0]:
        # a GPU box's config, on a machine without one: that, and only that, is refused
        assert report.problems and all("asks for a GPU, but this machine has none" in line
                                       for line in report.problems), report.problems
    else:
        assert report.ok, report.problems
    assert report.notes and "resolved into a trial config" in report.notes[0]


def _config(tmp_path: Path, space: dict | None = None, **overrides) -> Path:
    config = config_from("mnist.yml", tmp_path, **overrides)
    if space is not None:
        (tmp_path / "space.json").write_text(json.dumps(space))
        config["searchSpaceFile"] = str(tmp_path / "space.json")
    return write_config(tmp_path / "exp.yml", config)


@pytest.mark.parametrize("change,words", [
    (dict(space=C13), ('"learning_rate" (uniform) must have high > low',)),
    (dict(space={"conv_layers": {"_type": "choice", "_value": [6]}, "kernel": {"_type": "choice", "_value": [7]}}),
     ("cannot train", "'kernel' = 7")),
    (dict(space={"filterz": {"_type": "choice", "_value": [8]}}), ("cannot train", "unknown parameter 'filterz'")),
    (dict(trialCommand="python -m trial --dataset mnist --epochz 3"), ("trialCommand", "--epochz")),
    (dict(trialCommand="python -m trial --params nowhere.json"), ("--params nowhere.json",)),
    (dict(tuner={"name": "TPE", "classArgs": {"optimize_mode": "bigger"}}), ("tuner TPE fails",)),
    (dict(tuner={"name": "Evolution", "classArgs": {"optimize_mode": "maximize", "population_size": 4}},
          space={"widths": {"_type": "choice", "_value": [{"filters_1": 16}, {"filters_1": 32}]}}),
     ("tuner Evolution fails", "_name")),
    (dict(assessor={"name": "Medianstop", "classArgs": {"optimize_mode": "maximize", "start_stepz": 2}}),
     ("assessor cannot be built",)),
    (dict(trialConcurrency="two"), ("trialConcurrency: 'two' must be a whole number >= 1",)),
    (dict(tuner={"name": "TPE"}), ("tuner TPE is left at its default optimize_mode, minimize",
                                   "classArgs: {optimize_mode: maximize}")),
    (dict(tuner={"codeDirectory": str(TUNERS_DIR), "className": "fixed_tpe.FixedTPE"}),
     ("tuner fixed_tpe.FixedTPE is left at its default optimize_mode, minimize",)),
    (dict(assessor={"name": "Medianstop", "classArgs": {"optimize_mode": "minimize", "start_step": 1}}),
     ("assessor Medianstop has optimize_mode: minimize", "set `optimize_mode: maximize`")),
    (dict(tuner=HYPERBAND, trialCommand="python -m trial --dataset mnist --epochs 1 --threads 1"),
     ("trialCommand fixes --epochs 1", "fixed_hyperband.FixedHyperband's budget is the epoch count",
      "remove --epochs")),
    (dict(tuner={"name": "Hyperband", "classArgs": {"optimize_mode": "maximize", "R": 3, "eta": 3}},
          trialCommand="python -m trial --dataset mnist --epochs 2"), ("Hyperband's budget is the epoch count",)),
    (dict(tuner=HYPERBAND, trialCommand="python -m trial --dataset mnist --smoke --threads 1"),
     ("trialCommand fixes --smoke (epochs 1)", "budget is the epoch count", "remove --smoke")),
    (dict(trialCommand="python -m trial --dataset mnist --batch_size 64"),
     ("trialCommand fixes --batch_size 64, which the search space varies",)),
    (dict(trialCommand="python -m trial --dataset 'mnist --epochs 1"), ("trialCommand cannot be parsed",
                                                                       "No closing quotation")),
    # issue 29, other members: NNI's tuners that minimize or cannot run here, fields NNI refuses without a word
    (dict(tuner={"name": "Anneal"}), ("tuner Anneal is left at its default optimize_mode, minimize",)),
    (dict(tuner={"name": "Evolution", "classArgs": {"optimize_mode": "minimize"}}),
     ("tuner Evolution has optimize_mode: minimize",)),
    (dict(tuner={"name": "PBTTuner"}), ("load_checkpoint_dir", "use Evolution, TPE or Random")),
    (dict(tuner={"name": "SMAC"}), ("tuner SMAC cannot be loaded", "'smac'", "pick a tuner that runs here")),
    (dict(trialConcurrency=0), ("trialConcurrency: 0 must be a whole number >= 1",)),
    (dict(maxExperimentDuration="30 minutes"), ("maxExperimentDuration: '30 minutes' is not a duration", "30m")),
], ids=["reversed-bounds", "kernel-too-wide", "unknown-key", "bad-flag", "missing-params", "tuner-args",
        "evolution-plain-dicts", "assessor-args", "nni-field", "tpe-default-minimize", "fixed-tpe-no-args",
        "assessor-minimize", "hyperband-epochs", "builtin-hyperband-epochs", "hyperband-smoke", "flag-fixes-searched-key",
        "unparsable-command", "anneal-default-minimize", "evolution-minimize", "pbt-checkpoints", "smac-missing",
        "concurrency-0", "duration-words"])
def test_a_doomed_config_is_refused_with_one_line_per_problem(tmp_path, change, words):
    report = check(_config(tmp_path, **change), draws=40)
    assert not report.ok
    text = " | ".join(report.problems)
    assert all("\n" not in line for line in report.problems)
    assert all(w in text for w in words), text


@pytest.mark.parametrize("tuner", [{"name": "Random"}, {"name": "GridSearch"}, {"name": "Evolution"},
                                   {"name": "Medianstop"}], ids=["random", "grid", "evolution", "no-assessor-mode"])
def test_tuners_without_a_minimizing_default_pass(tmp_path, tuner):
    """Random and GridSearch have no mode, Evolution and Medianstop default to maximize (issue 29)."""
    change = {"assessor": tuner} if tuner["name"] == "Medianstop" else {"tuner": tuner}
    report = check(_config(tmp_path, **change), draws=40)   # more than Evolution's population of 32
    assert report.ok, report.problems


def test_a_space_file_nni_cannot_read_and_one_it_can(tmp_path):
    """NNI's manager reads the search-space file as UTF-8 (a UTF-16 one: before, a 300-character repr of its bytes);
    json.loads' refusals it reads as YAML, and so does the check; a missing file is one line, not two."""
    config = _config(tmp_path)
    data = yaml.safe_load(config.read_text())
    space = tmp_path / "space.json"
    space.write_bytes('{"learning_rate": {"_type": "loguniform", "_value": [0.001, 0.1]}}'.encode("utf-16"))
    data["searchSpaceFile"] = str(space)
    _only(check(write_config(config, data), draws=5), "is saved as UTF-16", "save it as UTF-8")
    space.write_text('{"learning_rate": {"_type": "loguniform", "_value": [0.001, 0.1]},}\n')
    assert check(config, draws=5).ok
    space.unlink()
    _only(check(config, draws=5), "cannot be read: No such file")


def test_hyperband_without_a_fixed_epoch_count_passes(tmp_path):
    report = check(_config(tmp_path, tuner=HYPERBAND, trialCommand="python -m trial --dataset mnist --threads 1"),
                   draws=20)
    assert report.ok, report.problems


def test_hyperband_budget_outranks_the_epochs_of_a_params_file_and_the_check_says_so(tmp_path, monkeypatch):
    """`--params p.json` whose file sets epochs, under Hyperband: sampled parameters outrank a params file, so the
    budget (TRIAL_BUDGET) wins in the trial; the check passes and says the file's count is replaced."""
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"dataset": "mnist", "epochs": 1}))
    report = check(_config(tmp_path, tuner=HYPERBAND, trialCommand=f"python -m trial --params {params} --threads 1"),
                   draws=20)
    assert report.ok, report.problems
    assert report.notes[-1] == ("the --params file's epochs (1) is replaced in every trial by "
                                "fixed_hyperband.FixedHyperband's budget (TRIAL_BUDGET)")

    class Budget3:   # what NNI hands a trial Hyperband promoted to a budget of 3 epochs
        params, parameter_id = {"TRIAL_BUDGET": 3}, 0
        intermediate = final = staticmethod(lambda metrics: None)
    from trial import adapter
    monkeypatch.setenv("NNI_PLATFORM", "local")
    monkeypatch.setattr(adapter, "NNIReporter", Budget3)
    trained = []
    assert adapter.main(["--params", str(params), "--output-dir", str(tmp_path / "run")],
                        run=lambda cfg, *_: trained.append(cfg.epochs) or {}) == 0
    assert trained == [3]


@needs_field_cases
def test_a_space_nni_loads_is_accepted(tmp_path):
    """c01: a choice whose options are plain dicts without `_name`: NNI 3.0's TPE takes it and its trials run."""
    space = json.loads((FIELD_CASES / "c01_choice_dicts_no_name.json").read_text())
    report = check(_config(tmp_path, space=space), draws=40)
    assert report.ok, report.problems


def _only(report, *words) -> str:
    assert len(report.problems) == 1, report.problems
    assert "\n" not in report.problems[0] and all(w in report.problems[0] for w in words), report.problems[0]
    return report.problems[0]


def test_gpus_that_are_not_there_are_refused(tmp_path):
    """NNI 3.0's manager shuts itself down seconds after the start where there is no NVIDIA driver, and trials that
    ask for more GPUs than there are wait forever: either is refused before anything starts."""
    count, _ = _visible_gpus()
    config = _config(tmp_path, trialGpuNumber=max(count, 1),
                     trainingService={"platform": "local", "useActiveGpu": False})
    if count:
        _only(check(config, draws=5), f"trialGpuNumber: {count} with maxTrialNumberPerGpu: 1",
              "never starts a trial that asks for all the GPUs")
        assert check(_config(tmp_path, trialGpuNumber=1, trainingService={
            "platform": "local", "useActiveGpu": False, "maxTrialNumberPerGpu": 2}), draws=5).ok
    else:
        _only(check(config, draws=5), "trialGpuNumber: 1 asks for a GPU, but this machine has none",
              "remove trialGpuNumber")


def test_a_taken_port_is_refused(tmp_path):
    config = _config(tmp_path)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        _only(check(config, draws=5, port=port), f"port {port} is taken", "pick another --port")
        # a remote experiment needs the port after --port too (nni/experiment/launcher.py checks it)
        line = _port_problem(port - 1, "remote")
        assert line is None or f"port {port} is taken" in line
    assert check(config, draws=5, port=port).ok


def test_a_relative_code_directory_is_resolved_as_nni_resolves_it(tmp_path):
    """A YAML kept outside the repository with `trialCodeDirectory: .`: NNI reads it from the YAML's own folder,
    which holds no trial package (every trial would fail with "No module named trial")."""
    config = config_from("mnist.yml", tmp_path)
    elsewhere = tmp_path / "my_configs"
    elsewhere.mkdir()
    config["trialCodeDirectory"] = "."
    line = _only(check(write_config(elsewhere / "exp.yml", config), draws=5), "trialCodeDirectory '.'",
                 str(elsewhere), "No module named trial", str(REPO))
    assert "YAML's own folder" in line
    config["trialCodeDirectory"] = os.path.relpath(REPO, elsewhere)    # the same folder, relative: accepted
    assert check(write_config(elsewhere / "exp.yml", config), draws=5).ok


def test_a_working_directory_that_cannot_be_written_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("a file where the folder should be\n")
    config = config_from("mnist.yml", tmp_path, experimentWorkingDirectory=str(tmp_path / "a_file" / "nni"))
    _only(check(write_config(tmp_path / "exp.yml", config), draws=5), "experimentWorkingDirectory",
          f"{tmp_path / 'a_file'} is a file")


def test_a_trial_interpreter_without_torch_is_refused(tmp_path, monkeypatch, capsys):
    """Started as `.venv/bin/python -m experiments.check ...` (its main, called here) from a shell whose PATH finds
    another `python` (one without torch, here a bare virtualenv): the trials would run that one and all fail."""
    from experiments.check import main
    bare = bare_python(tmp_path / "bare")
    config = _config(tmp_path)
    monkeypatch.setenv("PATH", f"{bare.parent}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.chdir(REPO)
    status = main([str(config), "--draws", "5"])
    out, err = capsys.readouterr()
    assert status == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"is {bare}" in errors[0] and "No module named 'torch'" in errors[0], err
    assert sys.executable in errors[0]     # the fix names the interpreter that has them
    # named in the command itself, the same
    config = _config(tmp_path, trialCommand=f"{bare} -m trial --dataset mnist --threads 1")
    _only(check(config, draws=5), "cannot import torch and nni", "No module named 'torch'")


def test_the_command_line(tmp_path, capsys):
    from experiments.check import main
    bad = _config(tmp_path, space=C13)
    assert main([str(bad)]) == 1                    # in this process; the accepted config below is a real one
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "high > low" in err
    proc = subprocess.run([sys.executable, "-m", "experiments.check", "nni_configs/fmnist.yml", "--draws", "20"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: "), proc.stderr


def test_dispatcher_error_reads_the_last_traceback(tmp_path):
    log = tmp_path / "abc" / "log" / "dispatcher.log"
    log.parent.mkdir(parents=True)
    (tmp_path / "abc" / "db").mkdir()
    (tmp_path / "abc" / "db" / "nni.sqlite").touch()       # how experiments.results.export finds an experiment
    log.write_text("[2026-11-30 10:00:00] INFO (nni/MainThread) start\n")
    assert dispatcher_error("abc", tmp_path) is None
    log.write_text(log.read_text() + "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                   "    rng.uniform(low, high)\nValueError: high - low < 0\n")
    assert dispatcher_error("abc", tmp_path) == "ValueError: high - low < 0"
    assert dispatcher_error("nonesuch", tmp_path) is None
    # a resumed experiment appends to the log: the earlier run's traceback is not the resumed tuner's
    resumed_at = log.stat().st_size
    assert dispatcher_error("abc", tmp_path, since=resumed_at) is None
    log.write_text(log.read_text() + "Traceback (most recent call last):\nKeyError: 7\n")
    assert dispatcher_error("abc", tmp_path, since=resumed_at) == "KeyError: 7"


def test_an_experiment_that_is_not_there_is_not_healthy(tmp_path, monkeypatch):
    """One line: the id is unknown, and where it was looked for (before, a status line "NOT running, status
    UNKNOWN" came first, as for an experiment that exists)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "experiments.check", "--experiment", "nosuchid", "--root",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr == (f"error: no experiment nosuchid at {tmp_path / 'nosuchid'} (nor in nnictl's registry, "
                           f"~/nni-experiments/.experiment): pass --root, the experimentWorkingDirectory of its "
                           f"config\n"), proc.stderr


@pytest.mark.parametrize("command, said", [("resume", "the experiment was not started"), ("view", "nothing to view")])
def test_resuming_or_viewing_an_unknown_experiment_is_one_line_and_runs_no_nnictl(tmp_path, monkeypatch, capsys,
                                                                                    command, said):
    """`experiments.secure nnictl view UNKNOWN` ended in nnictl's AttributeError traceback; `resume` printed that it
    was starting before saying the id was unknown. Both are now refused before nnictl runs, naming where experiments
    were looked for (nnictl's registry, and the --experiment_dir given)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(secure, "run_nnictl", lambda *a, **k: pytest.fail("nnictl ran for an unknown experiment"))
    assert secure.main(["nnictl", command, "nosuchid", "--port", str(free_port())]) == 2
    assert capsys.readouterr().err == (f"error: {said}: no experiment nosuchid in this user's nnictl registry "
                                       f"(~/nni-experiments/.experiment; `nnictl experiment list --all` lists them)\n")
    assert secure.main(["nnictl", command, "nosuchid", "-e", str(tmp_path), "--port", str(free_port())]) == 2
    assert f"nor under --experiment_dir {tmp_path};" in capsys.readouterr().err


def test_only_answering_dashboard_urls_are_printed():
    line = "[2026-11-30] \x1b[32mWeb portal URLs: \x1b[36mhttp://127.0.0.1:8095 http://192.0.2.2:8095\x1b[0m\n"
    out = secure.loopback_urls(line)
    assert "http://127.0.0.1:8095" in out and "192.0.2.2" not in out
    assert secure.loopback_urls("Experiment ID: abc\n") == "Experiment ID: abc\n"


def test_the_stop_hint_names_only_this_experiment():
    # nnictl 3.0's line (nni/tools/nnictl/launcher.py), colours included; its second command stops every experiment
    # of the user, advice the starter never passes on (spelt in two pieces here so no search mistakes it for a call)
    every = "--" + "all"
    line = f'[2026-11-30 21:04:29] \x1b[32mTo stop experiment run "nnictl stop vfu9drq3" or "nnictl stop {every}"\x1b[0m\n'
    assert secure.without_stop_all(line) == \
        '[2026-11-30 21:04:29] \x1b[32mTo stop experiment run "nnictl stop vfu9drq3"\x1b[0m\n'
    assert secure.without_stop_all("Experiment ID: abc\n") == "Experiment ID: abc\n"


# ---------------------------------------------------------------------------------------------- real experiments
def _secure_create(config: Path, env: dict, port: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.secure", "nnictl", "create", "--config", str(config),
                           "--port", str(port), *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)


def _registry(env: dict) -> dict:
    path = Path(env["HOME"]) / "nni-experiments" / ".experiment"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.nni
@pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")
def test_field_case_reversed_bounds_is_refused_before_anything_starts(tmp_path):
    """c13 in a real experiment: refused with one line; nothing registered, no manager started."""
    env = experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))
    proc = _secure_create(_config(tmp_path, space=C13), env, free_port())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "high > low" in errors[0] and "not started" in errors[-1] and len(errors) == 2
    assert _registry(env) == {}


@pytest.mark.nni
@pytest.mark.skipif(nnictl_path() is None, reason="nnictl is not installed")
def test_a_tuner_that_dies_is_reported_not_left_running(tmp_path):
    """c13 started anyway (--no-check): NNI 3.0 would show RUNNING with 0 trials; the starter says it did not start,
    with the tuner's error, prints no dashboard address, stops it by its id, and `experiments.check --experiment ID`
    says it again."""
    env = experiment_env(tmp_path, tiny_data.write_all(tmp_path / "data"))
    config = _config(tmp_path, space=C13)
    workdir = yaml.safe_load(config.read_text())["experimentWorkingDirectory"]
    port = free_port()
    proc = _secure_create(config, env, port, "--no-check")
    experiments = list(_registry(env))
    try:
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert len(experiments) == 1
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr
        assert f"experiment {experiments[0]} did not start: its tuner/assessor died: ValueError" in errors[0]
        assert f"stopped it (`nnictl stop {experiments[0]}`)" in errors[0]
        assert "Web portal URLs" not in proc.stdout and "is running" not in proc.stderr     # nothing said too soon
        assert _registry(env)[experiments[0]]["status"] != "RUNNING"
        wait_until(lambda: not processes_with(f"HOME={env['HOME']}"), 30, 0.5, "the experiment's processes to exit")
        again = subprocess.run([sys.executable, "-m", "experiments.check", "--experiment", experiments[0], "--root",
                                workdir], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 1 and "NOT running" in again.stderr and "ValueError" in again.stderr, again.stderr
    finally:
        for experiment in experiments:
            if _registry(env).get(experiment, {}).get("status") == "RUNNING":
                subprocess.run([nnictl_path(), "stop", experiment], env=env, capture_output=True, timeout=60)


def test_python_api_portal_urls_name_only_the_answering_address():
    # Experiment.start (experiments.launch.local, experiments.nas.multitrial) logs every interface's address on the
    # "nni.experiment" logger; inside secure.protected() the line keeps the loopback one only, and after it NNI's
    # logger is as it was
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("nni.experiment")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with secure.protected():
            logger.info("Web portal URLs: ${CYAN}" + "http://127.0.0.1:8095 http://192.0.2.2:8095")
            logger.info("Starting web server...")
        logger.info("Web portal URLs: http://127.0.0.1:8096 http://192.0.2.2:8096")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert records[0] == "Web portal URLs: http://127.0.0.1:8095" and records[1] == "Starting web server..."
    assert "192.0.2.2" in records[2]      # the filter is gone once the block ends


def test_a_killed_managers_dispatcher_retrying_is_not_a_dead_tuner(tmp_path):
    """After SIGKILL of NNI's manager its dispatcher goes on retrying the websocket and logs ConnectionRefusedError
    tracebacks into the dispatcher.log a resumed experiment shares; those are not the resumed tuner's death, while a
    tuner's own traceback still is."""
    from experiments.launch.check import dispatcher_error
    log = tmp_path / "exp1" / "log" / "dispatcher.log"
    log.parent.mkdir(parents=True)
    (tmp_path / "exp1" / "db").mkdir()
    (tmp_path / "exp1" / "db" / "nni.sqlite").touch()   # what makes a folder an experiment's
    retry = ("[2026-12-06 05:13:30] ERROR (nni.runtime.command_channel.websocket.channel/MainThread) Failed to receive "
             "command. Retry in 1s\nTraceback (most recent call last):\n  File \"x.py\", line 1, in _receive\n"
             "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 41189)\n"
             "[2026-12-06 05:13:40] INFO (nni.runtime.msg_dispatcher_base/MainThread) Report error to NNI manager: "
             "Traceback (most recent call last):\n    command, data = self._channel._receive()\n"
             "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 41189)\n")
    log.write_text(retry)
    assert dispatcher_error("exp1", tmp_path) is None
    log.write_text(retry + "[2026-12-06 05:14:00] ERROR (nni.main/MainThread) tuner died\n"
                   "Traceback (most recent call last):\n  File \"tpe.py\", line 9, in generate\n"
                   "ValueError: high - low < 0\n")
    assert dispatcher_error("exp1", tmp_path) == "ValueError: high - low < 0"
