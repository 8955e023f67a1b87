"""Pre-flight check of an NNI experiment config, and the health of a running experiment's tuner and assessor.

    python -m experiments.check nni_configs/fmnist.yml                 # before `nnictl create`
    python -m experiments.check nni_configs/fmnist.yml --draws 300
    python -m experiments.check nni_configs/fmnist.yml --port 8080     # ... and is that port free?
    python -m experiments.check --experiment q1d084i3                  # is it alive? every log's first error

Before anything starts, it checks, with NNI's own code where NNI has it:
1. the YAML (read with `trial.files.read_yaml`: a key given twice refused) with NNI's config classes (`ExperimentConfig.load`, `canonical_copy`);
2. the search space (trial.search_space.validate: NNI's validation and the tuners' own parser and draw);
3. the trial command: `python -m trial ...` flags parsed by the trial's own parser, its `--params` file read;
4. the configured tuner itself, built from the YAML as NNI builds it (built-in name or codeDirectory + className,
   classArgs), asked for `--draws` parameter sets, each resolved with the command's flags into a TrialConfig (every
   key must be a trial parameter, every value one that can train); the assessor is built too (its classArgs);
5. what would make every trial fail, or the search silently wrong: a tuner or assessor left at (or set to) an
   optimize_mode of minimize (NNI's TPE defaults to it; trials report validation accuracy); a trial command that
   cannot be parsed, or whose flags fix what the tuner varies (a flag outranks sampled parameters: `--epochs`, or
   `--smoke` and its 1 epoch, under Hyperband/BOHB, whose budget is the epoch count; a `--params` file's epochs is
   outranked by the budget, and a note says so); a local trial interpreter (the command's `python`, found in the
   PATH trials inherit) that cannot import torch and nni; GPUs asked for where none is visible, or more than there
   are; a trialCodeDirectory, as NNI resolves it (from the YAML's own folder), without the trial package; the
   experiment working directory or nnictl's registry (~/nni-experiments) not writable; with `--port`, the port (and,
   for a remote experiment, the next one) taken;
6. a dataset given by path (`--dataset PATH`, relative to trialCodeDirectory, where trials run): its audit
   (trial/folder.py, under the command's image keys), whose refusal (files that do not decode, an image in two
   splits, a class too small) every trial would meet; the decode it makes is cached for the trials.
Each problem is one line with the fix; the exit status is 1 when there is any. `experiments.secure ... create` and
the launchers run it first and refuse to start a doomed experiment.

NNI 3.0 leaves an experiment whose tuner (dispatcher) died showing RUNNING, with no new trials, the error only in
`<experiment dir>/log/dispatcher.log`, and a manager killed or crashed still RUNNING in nnictl's registry:
`--experiment ID` (experiments/launch/health.py) asks the manager (its pid, its REST API) whether it is alive and
names the first error of the manager's log, the dispatcher's log and the failed trials' stderr; a stopped or dead
experiment is never called healthy (exit status 1).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from experiments.results.export import experiment_dir
from trial import REPO
from trial.config import ALIASES, SMOKE, ConfigError, flatten_params, load_params_file, resolve
from trial.files import FileFormatError, read_yaml
from trial.search_space import SearchSpaceError, load_space, sample, validate

DRAWS = 300
MINIMIZING_BY_DEFAULT = ("Anneal", "TPE")   # nni/algorithms/hpo/hyperopt_tuner.py, tpe_tuner.py
CHECKPOINT_TUNERS = ("PBT", "PBTTuner")   # built-in names of NNI's population-based training
BUDGET_TUNERS = ("Hyperband", "BOHB")   # advisors whose budget reaches the trial as TRIAL_BUDGET, the epoch count
# platforms for which NNI's launcher also needs the port after the REST port (nni/experiment/launcher.py)
NEXT_PORT_PLATFORMS = ("hybrid", "remote", "openpai", "kubeflow", "frameworkcontroller", "adl")


@dataclass
class Report:
    """What the check found: `problems` (one line each) and `notes` (what it did, for the user)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _command_words(command: str) -> list[str] | str:
    """The trial command split as the trial's shell splits it, or a problem line."""
    try:
        words = shlex.split(command)
    except ValueError as err:
        return f"trialCommand cannot be parsed ({err}: check its quotes): {command!r}"
    return words or "trialCommand is empty"


def _interpreter_problem(words: list[str], code_dir: Path) -> str | None:
    """A local trial runs its command in bash, in trialCodeDirectory, with the environment of the process that starts
    NNI: the command's interpreter, found in that PATH, must import torch and nni, or every trial fails."""
    words = list(words)
    while words and (words[0] == "env" or re.match(r"^[A-Za-z_]\w*=", words[0])):
        words.pop(0)
    if not words:
        return None
    exe = words[0]
    path = (exe if os.path.isabs(exe) else str(code_dir / exe)) if "/" in exe else shutil.which(exe)
    fix = (f"activate the project's virtualenv before starting, or name its interpreter in trialCommand (e.g. "
           f"{sys.executable} -m trial ...)")
    if not path or not os.access(path, os.X_OK):
        return f"trialCommand's interpreter {exe!r} is not found in the PATH trials get: {fix}"
    try:
        prefix = subprocess.run([path, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                                timeout=60, cwd=code_dir if code_dir.is_dir() else None).stdout.strip()
        if prefix == sys.prefix:      # this very environment, which runs the check with torch and nni imported
            return None
        probe = subprocess.run([path, "-c", "import torch, nni"], capture_output=True, text=True, timeout=300,
                               cwd=code_dir if code_dir.is_dir() else None)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"trialCommand's interpreter {path} cannot be run ({_one_line(err)}): {fix}"
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines() or [f"exit status {probe.returncode}"]
        return (f"trialCommand's `{exe}` is {path}, which cannot import torch and nni ({lines[-1].strip()}): every "
                f"trial would fail; {fix}")
    return None


def _visible_gpus() -> tuple[int, str]:
    """(GPUs NNI's local service can use, why none) : NNI collects them through NVML (the NVIDIA driver's library),
    trials through torch."""
    import ctypes
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return 0, "no NVIDIA driver: NVML's libnvidia-ml.so.1 is not found"
    import torch
    count = torch.cuda.device_count()
    return count, "" if count else "torch sees no CUDA device"


def _gpu_problem(canon) -> str | None:
    """trialGpuNumber / gpuIndices on the local service where the GPUs are not there: NNI's manager shuts itself down
    seconds after the start ('Failed to collect GPU info'), or its trials wait forever (NNI 3.0's local scheduler,
    nni_node/common/trial_keeper/task_scheduler/scheduler.js, never starts a trial whose share,
    trialGpuNumber / maxTrialNumberPerGpu, is as many GPUs as the machine has or more)."""
    service = canon.training_service
    wanted = getattr(service, "trial_gpu_number", None) or canon.trial_gpu_number
    indices = getattr(service, "gpu_indices", None)
    if not wanted and not indices:
        return None
    count, why = _visible_gpus()
    if not count:
        return (f"trialGpuNumber: {wanted} asks for a GPU, but this machine has none ({why}): NNI's manager would shut "
                f"itself down seconds after the start ('Failed to collect GPU info'); remove trialGpuNumber (a trial's "
                f"device 'auto' still uses CUDA where there is one)")
    per_gpu = getattr(service, "max_trial_number_per_gpu", None) or 1
    if wanted and wanted / per_gpu >= count:
        return (f"trialGpuNumber: {wanted} with maxTrialNumberPerGpu: {per_gpu} asks {wanted / per_gpu:g} GPU(s) a trial "
                f"of the {count} visible, and NNI 3.0's local scheduler never starts a trial that asks for all the "
                f"GPUs or more: every trial would wait forever; ask for fewer, or let trials share a GPU "
                f"(maxTrialNumberPerGpu: 2)")
    if indices and max(indices) >= count:
        return f"gpuIndices {list(indices)} but {count} GPU(s) are visible (indices 0..{count - 1})"
    return None


def port_taken(port: int) -> bool:
    """Is something listening on the port (what NNI's launcher asks), or bound to it (the manager then cannot)?"""
    with socket.socket() as s:
        s.settimeout(1)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


def _port_problem(port: int, platform: str) -> str | None:
    if port_taken(port):
        also = f" (NNI also needs {port + 1} for a {platform} experiment)" if platform in NEXT_PORT_PLATFORMS else ""
        return f"port {port} is taken{also}: pick another --port"
    if platform in NEXT_PORT_PLATFORMS and port_taken(port + 1):
        return (f"port {port + 1} is taken, and NNI needs the port after --port {port} for a {platform} experiment: "
                f"pick another --port")
    return None


def _code_dir_problem(raw: dict, code_dir: Path, base: Path) -> str | None:
    """NNI runs trials in trialCodeDirectory, a relative one read from the YAML's own folder: it must hold the trial
    package, or every trial fails with 'No module named trial'."""
    if (code_dir / "trial" / "__main__.py").is_file():
        return None
    given = raw.get("trialCodeDirectory", ".")
    relative = "" if Path(str(given)).is_absolute() else f" (NNI reads it from the YAML's own folder, {base.resolve()})"
    from_here = os.path.relpath(REPO, base.resolve())
    from_here = "" if from_here.startswith(f"..{os.sep}..{os.sep}..") else f" (from this YAML's folder: {from_here})"
    return (f"trialCodeDirectory {given!r} is {code_dir}{relative}, which holds no trial package: every trial would "
            f"fail with 'No module named trial'; set it to the repository, {REPO}{from_here}")


COUNT_FIELDS = {"trialConcurrency": 1, "maxTrialNumber": 1, "trialGpuNumber": 0}   # field -> its least value
DURATION = re.compile(r"^\s*\d+(\.\d+)?\s*[smhd]\s*$")


def _field_problems(raw: dict, base: Path) -> list[str]:
    """The fields NNI's config classes refuse without saying which or why (a bare AssertionError for
    `trialConcurrency: 0`, "could not convert string to float: '30 minute'" for `30 minutes`), and a search-space
    file NNI's manager cannot read (it reads UTF-8 only), each in one line with the fix."""
    problems = []
    for key, least in COUNT_FIELDS.items():
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            problems.append(f"{key}: {value!r} must be a whole number >= {least}")
    for key in ("maxExperimentDuration", "maxTrialDuration"):
        value = raw.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
                                      or isinstance(value, str) and DURATION.match(value)):
            problems.append(f"{key}: {value!r} is not a duration NNI reads: a number and one unit letter, s, m, h or "
                            f"d (e.g. 30m, 1.5h, 2d)")
    space = raw.get("searchSpaceFile")
    if space and (base / str(space)).is_file():
        from trial.files import text_encoding
        codec = text_encoding(base / str(space))
        if codec != "utf-8-sig":
            problems.append(f"searchSpaceFile {space} is saved as {codec.upper()}, which NNI's manager cannot read "
                            f"(UTF-8 only): save it as UTF-8")
    return problems


def _writable_problems(canon) -> list[str]:
    """NNI's manager writes the experiment's folder (database, logs) under the working directory and nnictl's registry
    under ~/nni-experiments: a folder it cannot write stops it at the start."""
    home = Path.home() / "nni-experiments"
    work = Path(canon.experiment_working_directory).expanduser() if canon else home
    problems = []
    folders = {work: "experimentWorkingDirectory"}
    folders.setdefault(home, "nnictl's registry folder")
    for folder, what in folders.items():
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            problems.append(f"{what} {folder} cannot be created: {existing} is a file; set experimentWorkingDirectory "
                            f"to a folder this user can write")
            continue
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            problems.append(f"{what} {folder} cannot be written ({existing}: {err.strerror or _one_line(err)}); set "
                            f"experimentWorkingDirectory to a folder this user can write")
    return problems


def _optimize_mode_problem(spec: dict, cls: type | None, what: str) -> str | None:
    """Trials report validation accuracy: a tuner or assessor that minimizes it searches for the worst models. NNI's
    TPE (and so FixedTPE) defaults to minimize. A multi-objective tuner (experiments/tuners/pareto.py) has no
    optimize_mode: its `objective_directions` reads the direction of each metric key from its classArgs, and
    `default` (validation accuracy) must be among them, maximized."""
    label = spec.get("name") or spec.get("className")
    directions = getattr(cls, "objective_directions", None)
    if callable(directions):
        try:
            found = directions((spec.get("classArgs") or {}).get("objectives"))
        except ValueError as err:
            return f"the {what} {label}: {err}"
        if found.get("default") != "maximize":
            return (f"the {what} {label} " + ("minimizes `default`" if "default" in found else
                                               "does not optimise `default`") +
                    f" (objectives {found}), but `default` is validation accuracy (higher is better): give it as "
                    f"`default: maximize` in its classArgs objectives")
        return None
    mode = (spec.get("classArgs") or {}).get("optimize_mode")
    if mode is not None:
        if str(mode).lower() == "minimize":
            return (f"the {what} {label} has optimize_mode: minimize, but trials report validation accuracy (higher is "
                    f"better): set `optimize_mode: maximize` in its classArgs")
        return None
    if cls is None and label in MINIMIZING_BY_DEFAULT:   # not importable here (a package missing): NNI's own default
        return (f"the {what} {label} is left at its default optimize_mode, minimize: it would search for the lowest "
                f"validation accuracy; add `classArgs: {{optimize_mode: maximize}}` to its section")
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        try:
            param = inspect.signature(init).parameters.get("optimize_mode") if init else None
        except (TypeError, ValueError):
            continue
        if param is not None:
            default = getattr(param.default, "value", param.default)
            if str(default).lower() == "minimize":
                return (f"the {what} {label} is left at its default optimize_mode, minimize: it would search for the "
                        f"lowest validation accuracy; add `classArgs: {{optimize_mode: maximize}}` to its section")
            return None
    return None


def _budget_tuner(tuner) -> bool:
    """Whether the tuner (a class or an instance) is Hyperband or BOHB, whose budget is the epoch count."""
    cls = tuner if isinstance(tuner, type) else type(tuner)
    return any(klass.__name__ in BUDGET_TUNERS for klass in cls.__mro__)


def _fixed_flag_problems(flags: dict, sets: list[dict], tuner, label: str, smoke: dict | None = None) -> list[str]:
    """A flag in trialCommand outranks the sampled parameters: a key the tuner varies, fixed there, is silently never
    varied. Hyperband's and BOHB's budget is the epoch count (TRIAL_BUDGET). `--smoke` fixes the keys of `smoke`
    (trial.config.SMOKE: epochs 1 among them) as flags do, unless a flag gives them."""
    budget = _budget_tuner(tuner)
    varied = {"epochs"} if budget else set()
    for params in sets:
        with contextlib.suppress(ConfigError, AttributeError):
            varied |= {ALIASES.get(k, k) for k in flatten_params(params)}
    problems = []
    for flag, value in {**(smoke or {}), **flags}.items():
        key = ALIASES.get(flag, flag)
        if key not in varied:
            continue
        given = f"--{flag}" if flag in flags else "--smoke"
        fixes = f"--{flag} {value}" if flag in flags else f"--smoke ({key} {value})"
        if budget and key == "epochs":
            problems.append(f"trialCommand fixes {fixes}, but {label}'s budget is the epoch count "
                            f"(TRIAL_BUDGET): a flag outranks the sampled parameters, so every trial would train "
                            f"{value} epochs whatever its budget; remove {given} from trialCommand")
        else:
            problems.append(f"trialCommand fixes {fixes}, which the search space varies: a flag outranks the "
                            f"sampled parameters, so the tuner's {key} would never be used; remove {given} from "
                            f"trialCommand or {key} from the space")
    return problems


def _trial_layers(command: str, code_dir: Path) -> tuple[dict, dict, dict] | str:
    """(params-file layer, flag layer, --smoke layer: trial.config.SMOKE or {}) of a `python -m trial ...` command,
    or a problem line."""
    from trial.adapter import cli_overrides, parse_args
    words = _command_words(command)
    if isinstance(words, str):
        return words
    if "-m" not in words or words.index("-m") + 1 >= len(words) or words[words.index("-m") + 1] != "trial":
        return "the trial command does not run `python -m trial`"
    args = words[words.index("-m") + 2:]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = parse_args(args)
    except SystemExit:
        return f"trialCommand: {stderr.getvalue().strip().splitlines()[-1]}"
    file_params = {}
    if parsed.params:
        path = Path(parsed.params) if Path(parsed.params).is_absolute() else code_dir / parsed.params
        try:
            file_params = load_params_file(str(path))
        except (OSError, ConfigError) as err:
            return f"trialCommand --params {parsed.params}: {_one_line(err)}"
    return file_params, cli_overrides(parsed), dict(SMOKE) if parsed.smoke else {}


def _dataset_problem(file_params: dict, flags: dict, code_dir: Path) -> str | None:
    """The audit's refusal of a dataset given by path (point 6), or None. A relative path is read from code_dir, where
    trials run, and set absolute in the layer that named it, so the draws resolve it as the trials will."""
    from trial.config import normalize
    from trial.data import INFO, DatasetError
    from trial.folder import FolderOptions, audit, refusal
    layer = flags if "dataset" in flags else file_params
    name = str(layer.get("dataset") or "")
    if not name or name in INFO:
        return None
    dataset = Path(name).expanduser()
    dataset = dataset if dataset.is_absolute() else code_dir / dataset
    if not dataset.exists():
        return None   # resolving the draws says it: neither a dataset name nor an existing path
    layer["dataset"] = str(dataset)
    keys = {f: v for f, v in {**file_params, **flags}.items() if f in FolderOptions.__dataclass_fields__}
    try:
        found = audit(dataset, FolderOptions(**normalize(keys)))
    except (ConfigError, DatasetError) as err:
        return f"dataset {name}: {_one_line(err)}"
    return None if found.ok else f"the trials' dataset is refused by its audit: {refusal(found)}"


def _algorithm(spec, base: Path, kind: str):
    """Build the tuner or assessor the YAML names, as NNI's dispatcher does. An advisor (Hyperband: it talks to NNI's
    manager itself and cannot be built outside it) comes back as its class, its classArgs bound to its signature."""
    import importlib
    import inspect

    from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
    from nni.tools.package_utils.tuner_factory import (
        create_builtin_class_instance,
        create_customized_class_instance,
        get_builtin_module_class_name,
    )
    args = spec.get("classArgs") or {}
    saved = list(sys.path)
    try:
        if spec.get("name"):
            module, name = get_builtin_module_class_name(kind, spec["name"])
        else:
            code_dir = spec.get("codeDirectory")
            code_dir = str((base / code_dir).resolve()) if code_dir else None
            if code_dir:
                sys.path.append(code_dir)
            module, name = str(spec.get("className")).rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, MsgDispatcherBase):
            inspect.signature(cls).bind(**args)
            return cls
        if spec.get("name"):
            return create_builtin_class_instance(spec["name"], args, kind)
        return create_customized_class_instance({"codeDirectory": code_dir, "className": spec.get("className"),
                                                 "classArgs": args})
    finally:
        sys.path[:] = saved


def _draws(tuner, space: dict, n: int) -> tuple[list[dict], str]:
    """Up to n parameter sets from the tuner itself (NoMoreTrialError ends a small grid early); an advisor (a class:
    Hyperband sends its sets over NNI's command channel) is stood in for by NNI's Random draw, said in the note."""
    from nni import NoMoreTrialError
    if isinstance(tuner, type):
        import random
        rng = random.Random(0)
        return [sample(space, rng) for _ in range(n)], (f"{tuner.__name__} draws only inside NNI's manager: {n} sets "
                                                        f"drawn as NNI's Random tuner draws them")
    tuner.update_search_space(space)
    draws = []
    for i in range(n):
        try:
            draws.append(tuner.generate_parameters(i))
        except NoMoreTrialError:
            break
        except RuntimeError as err:   # Evolution: its population drawn, it waits for results the check cannot send
            if draws and "population is empty" in str(err):
                break
            raise
    return draws, f"{len(draws)} sets drawn by {type(tuner).__name__}"


def check(config_path: str | Path, draws: int = DRAWS, port: int | None = None) -> Report:
    """Check an experiment YAML as described in the module docstring (`port`: the --port it will be started on);
    never raises for a bad config."""
    report = Report()
    path = Path(config_path)
    try:
        raw = read_yaml(path)   # a byte-order mark and CRLF accepted, a key given twice refused
    except (OSError, FileFormatError) as err:
        report.problems.append(f"{path}: {_one_line(err)}")
        return report
    if not isinstance(raw, dict):
        report.problems.append(f"{path}: not a YAML mapping of NNI config fields")
        return report
    base = path.parent
    canon = None
    try:
        from nni.experiment.config import ExperimentConfig
        with _quiet():
            canon = ExperimentConfig.load(str(path)).canonical_copy()
    except Exception as err:   # noqa: BLE001 - NNI raises ValueError, TypeError, AssertionError... for bad fields
        fields = _field_problems(raw, base)   # NNI's own message is a bare AssertionError or a repr of bytes
        own = "Failed to load search space file" in str(err)   # our own reading of the space names it below
        report.problems += [f"{path}: {line}" for line in fields] or ([] if own else [
            f"{path}: NNI's config validation: {type(err).__name__}: {_one_line(err)}"])
    report.problems += [f"{path}: {line}" for line in _environment_problems(raw, canon, base, port)]
    if "searchSpaceFile" in raw:
        try:
            space = load_space(str(base / raw["searchSpaceFile"]))
        except SearchSpaceError as err:
            report.problems.append(str(err))
            return report
    else:
        try:
            space = validate(raw.get("searchSpace") or {})
        except SearchSpaceError as err:
            report.problems.append(f"{path} searchSpace: {err}")
            return report
    layers = _trial_layers(str(raw.get("trialCommand", "")), (base / raw.get("trialCodeDirectory", ".")).resolve())
    if isinstance(layers, str):
        report.problems.append(f"{path}: {layers}")
        return report
    file_params, flags, smoke = layers
    line = _dataset_problem(file_params, flags, (base / raw.get("trialCodeDirectory", ".")).resolve())
    if line:
        report.problems.append(f"{path}: {line}")
    tuner_spec = raw.get("tuner") or raw.get("advisor") or {}
    label = tuner_spec.get("name") or tuner_spec.get("className")
    if tuner_spec.get("name") in CHECKPOINT_TUNERS:
        report.problems.append(f"{path}: the tuner {label} sends every trial `load_checkpoint_dir` and "
                               f"`save_checkpoint_dir` parameters (weights carried between its generations), which "
                               f"`python -m trial` does not read: every trial would fail on them; use Evolution, TPE "
                               f"or Random")
        return report
    try:
        with _quiet():
            tuner = _algorithm(tuner_spec, base, "tuners")
            sets, note = _draws(tuner, space, draws)
    except ModuleNotFoundError as err:   # NNI's dispatcher dies the same way, the experiment left RUNNING
        report.problems += [f"{path}: {line}" for line in [_optimize_mode_problem(tuner_spec, None, "tuner")] if line]
        report.problems.append(f"{path}: the tuner {label} cannot be loaded: it needs the package {err.name!r}, which "
                               f"is not installed here (NNI's dispatcher would die at the start); pick a tuner that "
                               f"runs here (TPE, Random, Evolution, GridSearch, Batch) or install it")
        return report
    except Exception as err:   # noqa: BLE001 - what the tuner raises here, it raises in the dispatcher
        report.problems.append(f"{path}: the tuner {label} fails on this search space: {type(err).__name__}: "
                               f"{_one_line(err)}")
        return report
    for line in [_optimize_mode_problem(tuner_spec, tuner if isinstance(tuner, type) else type(tuner), "tuner"),
                 *_fixed_flag_problems(flags, sets, tuner, label, smoke)]:
        if line:
            report.problems.append(f"{path}: {line}")
    if raw.get("assessor"):
        try:
            with _quiet():
                assessor = _algorithm(raw["assessor"], base, "assessors")
        except Exception as err:   # noqa: BLE001
            report.problems.append(f"{path}: the assessor cannot be built: {type(err).__name__}: {_one_line(err)}")
        else:
            line = _optimize_mode_problem(raw["assessor"], type(assessor), "assessor")
            if line:
                report.problems.append(f"{path}: {line}")
    failures = {}
    for params in sets:
        try:
            resolve(file_params, params, smoke, flags)   # the trial's order (trial/adapter.py)
        except ConfigError as err:
            failures.setdefault(str(err), params)
    for message, params in list(failures.items())[:5]:
        report.problems.append(f"{path}: a drawn parameter set cannot train: {message} (e.g. {params})")
    if len(failures) > 5:
        report.problems.append(f"{path}: ... and {len(failures) - 5} more kinds of unusable parameter sets")
    if not failures:
        report.notes.append(f"{note}, each resolved into a trial config")
    epochs = [v for k, v in file_params.items() if ALIASES.get(k, k) == "epochs"]
    if _budget_tuner(tuner) and epochs:
        # sampled parameters outrank a params file: the budget wins, as it should, and the file's count is unused
        report.notes.append(f"the --params file's epochs ({epochs[0]}) is replaced in every trial by {label}'s "
                            f"budget (TRIAL_BUDGET)")
    return report


def _environment_problems(raw: dict, canon, base: Path, port: int | None) -> list[str]:
    """What the machine, rather than the search, would make fail: interpreter, GPUs, port, code and working
    directories (module docstring, point 5)."""
    service = raw.get("trainingService")
    platform = "hybrid" if isinstance(service, list) else (service or {}).get("platform", "local")
    code_dir = (Path(canon.trial_code_directory) if canon is not None else
                (base / str(raw.get("trialCodeDirectory", "."))).resolve())
    problems = [_code_dir_problem(raw, code_dir, base), *_writable_problems(canon)]
    words = _command_words(str(raw.get("trialCommand", "")))
    if platform == "local" and isinstance(words, list):     # elsewhere the interpreter is the workers' own
        problems.append(_interpreter_problem(words, code_dir))
    if platform == "local" and canon is not None:
        problems.append(_gpu_problem(canon))
    if port is not None:
        problems.append(_port_problem(port, platform))
    return [line for line in problems if line]


@contextlib.contextmanager
def _quiet():
    """NNI's algorithms log to stdout while being built; a pre-flight check shows only its own lines."""
    with contextlib.redirect_stdout(io.StringIO()):
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


# ------------------------------------------------------------------------------------------ a running experiment
def dispatcher_log(experiment_id: str, root: str | Path | None = None) -> Path | None:
    """The experiment's dispatcher.log (its tuner and assessor process), None when the experiment is not found."""
    try:
        return experiment_dir(experiment_id, root) / "log" / "dispatcher.log"
    except FileNotFoundError:
        return None


def dispatcher_error(experiment_id: str, root: str | Path | None = None, since: int = 0) -> str | None:
    """The error that ended the experiment's tuner or assessor (NNI's dispatcher process), one line, from its
    dispatcher.log after byte `since` (a resumed experiment appends to the log of its earlier runs); None while it
    runs (or never ran)."""
    log = dispatcher_log(experiment_id, root)
    if log is None:                # no such experiment (yet)
        return None
    try:
        with open(log, "rb") as fh:
            fh.seek(since if since <= log.stat().st_size else 0)   # a log started afresh is read whole
            text = fh.read().decode(errors="replace")
    except OSError:                # no dispatcher log (yet)
        return None
    text = _without_channel_retries(text)
    if "Traceback (most recent call last)" not in text:
        return None
    tail = text[text.rindex("Traceback (most recent call last)"):].splitlines()
    # the exception line: the last line of the traceback that is not indented and not a log header
    errors = [line for line in tail[1:] if line and not line.startswith((" ", "\t", "["))
              and re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b|^[\w.]+:", line)]
    return errors[-1].strip() if errors else tail[-1].strip()


def _without_channel_retries(text: str) -> str:
    """dispatcher.log without the records (header line and traceback) of NNI's command channel retrying its websocket:
    a dispatcher whose manager was killed goes on retrying and logging ConnectionRefusedError into the log that the
    resumed experiment's new dispatcher shares. Those records say the old manager is gone, not that a tuner died."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("[") or not records:   # a record's header: "[time] LEVEL (logger/thread) message"
            records.append([])
        records[-1].append(line)
    lost = ("command_channel.websocket", "_channel._receive()")   # the channel to the manager failing, not the tuner
    return "\n".join(line for record in records if not any(mark in "\n".join(record) for mark in lost)
                     for line in record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.check", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="the experiment YAML (e.g. nni_configs/fmnist.yml)")
    p.add_argument("--draws", type=int, default=DRAWS, help=f"parameter sets asked of the tuner (default {DRAWS})")
    p.add_argument("--port", type=int, help="the --port it will be started on: is it (and, remote, the next) free?")
    p.add_argument("--experiment", help="instead: is this experiment alive? its manager, REST API and every log")
    p.add_argument("--root", help="with --experiment: NNI's experiment directory (default: where nnictl's registry "
                                  "says, else ~/nni-experiments)")
    args = p.parse_args(argv)
    if args.experiment:
        from .health import diagnose
        health = diagnose(args.experiment, args.root)
        state = "alive" if health.alive else "NOT running"
        if health.found:   # an unknown id is its one problem's line alone
            print(f"experiment {args.experiment}: {state}, status {health.status} ({health.root})",
                  file=sys.stdout if health.healthy else sys.stderr)
        for line in health.notes:
            print(f"  {line}")
        for line in health.problems:
            print(f"error: {line}", file=sys.stderr)
        return 0 if health.healthy else 1
    if not args.config:
        p.error("give an experiment YAML, or --experiment ID")
    report = check(args.config, args.draws, args.port)
    for line in report.problems:
        print(f"error: {line}", file=sys.stderr)
    if report.ok:
        print(f"ok: {args.config}: " + "; ".join(report.notes))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
