"""Pre-flight check of an NNI experiment config, and the health of a running experiment's tuner and assessor.

    python -m experiments.check nni_configs/fmnist.yml                 # before `nnictl create`
    python -m experiments.check nni_configs/fmnist.yml --draws 300
    python -m experiments.check --experiment q1d084i3                  # is its tuner/assessor still alive?

Before anything starts, it checks, with NNI's own code where NNI has it:
1. the YAML (read with `yaml.safe_load`) with NNI's config classes (`ExperimentConfig.load`, `canonical_copy`);
2. the search space (trial.search_space.validate: NNI's validation and the tuners' own parser and draw);
3. the trial command: `python -m trial ...` flags parsed by the trial's own parser, its `--params` file read;
4. the configured tuner itself, built from the YAML as NNI builds it (built-in name or codeDirectory + className,
   classArgs), asked for `--draws` parameter sets, each resolved with the command's flags into a TrialConfig (every
   key must be a trial parameter, every value one that can train); the assessor is built too (its classArgs).
Each problem is one line; the exit status is 1 when there is any. `experiments.secure ... create` and the launchers
run it first and refuse to start a doomed experiment.

NNI 3.0 leaves an experiment whose tuner (dispatcher) died showing RUNNING, with no new trials, the error only in
`<experiment dir>/log/dispatcher.log`: `dispatcher_error` reads it back, `--experiment ID` prints it, and the secure
starter watches the first seconds of a new experiment for it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from experiments.results.export import experiment_dir
from trial.config import ConfigError, load_params_file, resolve
from trial.search_space import SearchSpaceError, load_space, sample, validate

DRAWS = 300


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


def _trial_layers(command: str, code_dir: Path) -> tuple[dict, dict] | str:
    """(params-file layer, flag layer) of a `python -m trial ...` command, or a problem line."""
    from trial.__main__ import cli_overrides, parse_args
    words = shlex.split(command)
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
    return file_params, cli_overrides(parsed)


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
    return draws, f"{len(draws)} sets drawn by {type(tuner).__name__}"


def check(config_path: str | Path, draws: int = DRAWS) -> Report:
    """Check an experiment YAML as described in the module docstring; never raises for a bad config."""
    report = Report()
    path = Path(config_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        report.problems.append(f"{path}: {_one_line(err)}")
        return report
    if not isinstance(raw, dict):
        report.problems.append(f"{path}: not a YAML mapping of NNI config fields")
        return report
    base = path.parent
    try:
        from nni.experiment.config import ExperimentConfig
        with _quiet():
            ExperimentConfig.load(str(path)).canonical_copy()
    except Exception as err:   # noqa: BLE001 - NNI raises ValueError, TypeError, AssertionError... for bad fields
        report.problems.append(f"{path}: NNI's config validation: {type(err).__name__}: {_one_line(err)}")
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
    file_params, flags = layers
    tuner_spec = raw.get("tuner") or raw.get("advisor") or {}
    try:
        with _quiet():
            tuner = _algorithm(tuner_spec, base, "tuners")
            sets, note = _draws(tuner, space, draws)
    except Exception as err:   # noqa: BLE001 - what the tuner raises here, it raises in the dispatcher
        report.problems.append(f"{path}: the tuner {tuner_spec.get('name') or tuner_spec.get('className')} fails "
                               f"on this search space: {type(err).__name__}: {_one_line(err)}")
        return report
    if raw.get("assessor"):
        try:
            with _quiet():
                _algorithm(raw["assessor"], base, "assessors")
        except Exception as err:   # noqa: BLE001
            report.problems.append(f"{path}: the assessor cannot be built: {type(err).__name__}: {_one_line(err)}")
    failures = {}
    for params in sets:
        try:
            resolve(file_params, params, flags)
        except ConfigError as err:
            failures.setdefault(str(err), params)
    for message, params in list(failures.items())[:5]:
        report.problems.append(f"{path}: a drawn parameter set cannot train: {message} (e.g. {params})")
    if len(failures) > 5:
        report.problems.append(f"{path}: ... and {len(failures) - 5} more kinds of unusable parameter sets")
    if not failures:
        report.notes.append(f"{note}, each resolved into a trial config")
    return report


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
    if "Traceback (most recent call last)" not in text:
        return None
    tail = text[text.rindex("Traceback (most recent call last)"):].splitlines()
    # the exception line: the last line of the traceback that is not indented and not a log header
    errors = [line for line in tail[1:] if line and not line.startswith((" ", "\t", "["))
              and re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b|^[\w.]+:", line)]
    return errors[-1].strip() if errors else tail[-1].strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.check", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="the experiment YAML (e.g. nni_configs/fmnist.yml)")
    p.add_argument("--draws", type=int, default=DRAWS, help=f"parameter sets asked of the tuner (default {DRAWS})")
    p.add_argument("--experiment", help="instead: say whether this experiment's tuner and assessor are alive")
    p.add_argument("--root", help="with --experiment: NNI's experiment directory (default ~/nni-experiments)")
    args = p.parse_args(argv)
    if args.experiment:
        error = dispatcher_error(args.experiment, args.root)
        if error:
            print(f"experiment {args.experiment}: its tuner/assessor died: {error} (NNI still shows it RUNNING; "
                  f"stop it with `nnictl stop {args.experiment}`; the log is "
                  f"{experiment_dir(args.experiment, args.root) / 'log' / 'dispatcher.log'})", file=sys.stderr)
            return 1
        print(f"experiment {args.experiment}: no tuner or assessor error in its dispatcher log")
        return 0
    if not args.config:
        p.error("give an experiment YAML, or --experiment ID")
    report = check(args.config, args.draws)
    for line in report.problems:
        print(f"error: {line}", file=sys.stderr)
    if report.ok:
        print(f"ok: {args.config}: " + "; ".join(report.notes))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
