"""A multi-objective tuner for NNI 3.0: `ParetoTuner`, Optuna's NSGA-II or multi-objective TPE behind NNI's Tuner API.

Why: NNI 3.0 optimises one number, the metric's `default` (nni#4730); its maintainers point to a tuner of one's own
for NSGA-style search (nni#2525). This one asks Optuna (a well-kept implementation, not a copy of the algorithm) for
each parameter set and tells it each trial's objectives, read from the keys of the trial's final metric dict:
validation accuracy (`default`, maximised) against latency or size (`latency_ms`, `params`, `model_bytes`, `macs`,
`latency_ms_gpu`; minimised).

How: `generate_parameters` -> `study.ask()`, then one `suggest_*` per parameter of the search space in the order NNI's
own parser (`nni.common.hpo_utils.format_search_space`, as TPE and Random use) lists them, so the space is the same
JSON as every other tuner's: a nested choice is a categorical whose options' parameters exist only in trials that chose
them (conditional parameters, named by path: `optimizer[sgd].learning_rate`); choice and randint are categoricals;
uniform, loguniform and the q-types are floats (on the log scale for log types, rounded and clipped by NNI's own
`deformat_parameters`); normal types draw a quantile in (0, 1) mapped through the normal's inverse CDF.
`receive_trial_result` -> `study.tell(trial, values)`; `trial_end` of a failed or stopped trial -> FAIL (NNI's
trial-end event says only success or not, so an assessor's stop is a FAIL too). A trial refused by a constraint
(`max_params`, `max_latency_ms`: it reports `default` 0.0 and its figures without training) is told as infeasible
(`Trial.set_constraint`), which both samplers rank behind every feasible trial: last on accuracy, and never on the
front. NNI's traps are handled: a metric delivered JSON-encoded (a string, once or twice) is decoded; a result for an
id whose end NNI already reported under a failed trial (mis-paired ids under concurrency, upstream #5726) is added as
a new completed trial; a second result for one id is ignored.

The study is kept in memory (one dispatcher process) and written after each result to `pareto_tuner.json` in the
experiment's log folder (NNI_LOG_DIRECTORY), or to `record` where given: every trial's parameter id, state, values and
parameters, and the front. The report's own front comes from the trials' records (experiments/results/pareto.py).

Experiment configs load it as a customized tuner (paths relative to the YAML, here one in nni_configs/):

    tuner:
      codeDirectory: ../experiments/tuners
      className: pareto.ParetoTuner
      classArgs:
        algorithm: nsga2                  # or motpe (Optuna's TPESampler on several objectives)
        objectives: {default: maximize, latency_ms: minimize}   # or a list: [default, params]
        population_size: 20               # NSGA-II's generation size
        seed: 0

Optuna's logging is set to warnings (one line per trial otherwise fills dispatcher.log).
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import warnings
from pathlib import Path

import optuna
from nni.common.hpo_utils import deformat_parameters, format_parameters, format_search_space
from nni.tuner import Tuner

_logger = logging.getLogger(__name__)

ALGORITHMS = ("nsga2", "motpe")
DIRECTIONS = ("maximize", "minimize")
# the keys of a trial's final metric dict a tuner may optimise (trial/train.py), with their natural direction; the
# test accuracy is deliberately absent: tuners see validation numbers only
OBJECTIVES = {"default": "maximize", "params": "minimize", "macs": "minimize", "latency_ms": "minimize",
              "latency_ms_gpu": "minimize", "model_bytes": "minimize"}
DEFAULT_OBJECTIVES = ("default", "latency_ms")
REFUSED = "refused"   # the constraint's name in the study: > 0 for a trial refused by max_params, max_latency_ms, ...
_QUANTILE = 1e-6      # normal types: the quantile's range is [q, 1 - q], so the inverse CDF stays finite


def objective_directions(objectives=None) -> dict[str, str]:
    """{metric key: "maximize" | "minimize"} from the `objectives` class argument: a list of metric keys (each in its
    natural direction: `default` maximised, size and latency minimised), a mapping key -> direction, or None for
    DEFAULT_OBJECTIVES (validation accuracy against CPU latency). ValueError,
    naming the accepted values, for an unknown key or direction, a key given twice or fewer than two objectives."""
    objectives = DEFAULT_OBJECTIVES if objectives is None else objectives
    if isinstance(objectives, dict):
        pairs = list(objectives.items())
    elif isinstance(objectives, (list, tuple)):
        pairs = [(key, OBJECTIVES.get(key)) for key in objectives]
    else:
        raise ValueError(f"objectives must be a list of metric keys or a mapping key -> direction, got {objectives!r}")
    keys = [key for key, _ in pairs]
    for key, direction in pairs:
        if key not in OBJECTIVES:
            raise ValueError(f"objectives: unknown metric key {key!r}; valid: {', '.join(OBJECTIVES)}")
        if direction not in DIRECTIONS:
            raise ValueError(f"objectives: {key} has direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"objectives: a key is given twice in {keys}")
    if len(keys) < 2:
        raise ValueError(f"objectives: {keys} is one objective; give two or more (e.g. [default, latency_ms]), or use "
                         f"fixed_tpe.FixedTPE for validation accuracy alone")
    return dict(pairs)


def decode_metric(value) -> dict:
    """A final metric as NNI delivers it (a number, a dict, or either JSON-encoded once or twice) as a dict with
    `default`."""
    for _ in range(3):
        if not isinstance(value, str):
            break
        value = json.loads(value)
    if isinstance(value, dict):
        return value
    return {"default": value}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class ParetoTuner(Tuner):
    """NNI tuner driving an Optuna multi-objective sampler through ask/tell. Class args: `objectives` (see
    objective_directions; default [default, latency_ms]), `algorithm` (nsga2 | motpe), `population_size` (NSGA-II's
    generation, default 20), `n_startup_trials` (MOTPE's random start, default 10), `seed`, `record` (a path for the
    study's JSON record; default pareto_tuner.json in the experiment's log folder under NNI, none outside it)."""

    # the pre-flight check (experiments/launch/check.py) reads the directions from the class args with this
    objective_directions = staticmethod(objective_directions)

    def __init__(self, objectives=None, algorithm: str = "nsga2", population_size: int = 20,
                 n_startup_trials: int = 10, seed: int | None = None, record: str | None = None):
        self.directions = objective_directions(objectives)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        self.algorithm, self.seed = algorithm, seed
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():   # multivariate and group are "experimental" in Optuna: we pin the version
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = (optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)
                       if algorithm == "nsga2" else
                       optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, multivariate=True, group=True,
                                                  constant_liar=True, seed=seed))
        self.study = optuna.create_study(directions=list(self.directions.values()), sampler=sampler)
        log_dir = os.environ.get("NNI_LOG_DIRECTORY")
        self.record = Path(record) if record else (Path(log_dir) / "pareto_tuner.json" if log_dir else None)
        self.space: dict = {}
        self._formatted: dict = {}
        self._trials: dict = {}        # NNI parameter id -> optuna trial (asked, not yet told)
        self._params: dict = {}        # NNI parameter id -> the parameters sent (NNI's shape)
        self._told: dict = {}          # NNI parameter id -> the state it was told with
        self._failed: dict = {}        # NNI parameter id -> its trial told as failed (a result may still come)

    # ---------------------------------------------------------------------------------------------- NNI's API
    def update_search_space(self, search_space: dict) -> None:
        self.space = search_space
        self._formatted = format_search_space(search_space)

    def generate_parameters(self, parameter_id, **kwargs) -> dict:
        trial = self.study.ask()
        formatted = {}
        for key, spec in self._formatted.items():
            if spec.is_activated_in(formatted):
                formatted[key] = self._suggest(trial, key, spec)
        params = deformat_parameters(formatted, self._formatted)
        trial.set_user_attr("nni_parameter_id", parameter_id)
        trial.set_user_attr("parameters", params)
        self._trials[parameter_id], self._params[parameter_id] = trial, params
        return params

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs) -> None:
        metrics = decode_metric(value)
        values, missing = self._values(metrics)
        refused = _is_refused(metrics)
        if parameter_id in self._told:
            if self._told[parameter_id] != optuna.trial.TrialState.FAIL or missing:
                _logger.warning("ParetoTuner: a second result for parameter id %s ignored", parameter_id)
                return
            # NNI named another trial's failed end with this id (mis-paired under concurrency); the result is real
            self._add_completed(parameter_id, self._params.get(parameter_id, parameters), values, refused, metrics,
                                like=self._failed.pop(parameter_id, None))
            self._told[parameter_id] = optuna.trial.TrialState.COMPLETE
        elif parameter_id not in self._trials:
            _logger.warning("ParetoTuner: a result for parameter id %s, which this tuner did not generate, ignored",
                            parameter_id)
            return
        elif missing:
            _logger.error("ParetoTuner: parameter id %s reported no finite %s (keys: %s): told as failed",
                          parameter_id, ", ".join(missing), ", ".join(sorted(metrics)))
            self._tell(parameter_id, state=optuna.trial.TrialState.FAIL)
        else:
            trial = self._trials[parameter_id]
            trial.set_constraint(REFUSED, 1.0 if refused else 0.0)
            trial.set_user_attr("metrics", _plain(metrics))
            self._tell(parameter_id, values=values)
        self._write_record()

    def trial_end(self, parameter_id, success: bool, **kwargs) -> None:
        # a success without a result, or an end NNI named with another running trial's id: that trial's result will
        # still come (with its own id, from the trial), so only failures are told here
        if not success and parameter_id in self._trials and parameter_id not in self._told:
            self._tell(parameter_id, state=optuna.trial.TrialState.FAIL)
            self._write_record()

    def import_data(self, data) -> None:
        """Results of an earlier run (`nnictl resume`, or an experiment's import): each [{parameter, value}] added to
        the study as a completed trial; entries outside the current space are skipped."""
        for entry in data:
            metrics = decode_metric(entry.get("value"))
            values, missing = self._values(metrics)
            if missing:
                continue
            try:
                self._add_completed(None, entry["parameter"], values, _is_refused(metrics), metrics)
            except (KeyError, ValueError, TypeError, IndexError) as err:
                _logger.warning("ParetoTuner: imported trial skipped (%s: %s)", type(err).__name__, err)
        self._write_record()

    # ---------------------------------------------------------------------------------------------- the study
    def front(self) -> list[dict]:
        """The study's Pareto front (feasible completed trials no other dominates): parameter id, values (in the
        order of `directions`) and parameters of each."""
        return [{"parameter_id": t.user_attrs.get("nni_parameter_id"), "values": t.values,
                 "parameters": t.user_attrs.get("parameters")} for t in self.study.best_trials]

    def state(self) -> dict:
        """The study as JSON-ready data: what the record file holds."""
        return {"algorithm": self.algorithm, "seed": self.seed, "objectives": self.directions,
                "trials": [{"number": t.number, "parameter_id": t.user_attrs.get("nni_parameter_id"),
                            "state": t.state.name, "values": t.values, "refused": t.constraints.get(REFUSED, 0) > 0,
                            "parameters": t.user_attrs.get("parameters")}
                           for t in self.study.get_trials(deepcopy=False)],
                "front": [t.number for t in self.study.best_trials]}

    def _suggest(self, trial, key: tuple, spec):
        name = self._path(key)
        if spec.categorical:
            return trial.suggest_categorical(name, list(range(spec.size)))
        if spec.normal_distributed:
            u = trial.suggest_float(name, _QUANTILE, 1 - _QUANTILE)
            return statistics.NormalDist(spec.mu, spec.sigma).inv_cdf(u)
        return trial.suggest_float(name, spec.low, spec.high)   # log types: low, high are logarithms already

    def _path(self, key: tuple) -> str:
        """A parameter's name by path: `optimizer[sgd].learning_rate` for learning_rate under optimizer's sgd option."""
        name = str(key[0])
        for i, part in enumerate(key[1:], 1):
            if isinstance(part, int):
                option = self._formatted[key[:i]].values[part]
                name += f"[{option['_name']}]"
            else:
                name += f".{part}"
        return name

    def _values(self, metrics: dict) -> tuple[list[float], list[str]]:
        values = [_number(metrics.get(key)) for key in self.directions]
        return values, [key for key, v in zip(self.directions, values) if v is None]

    def _tell(self, parameter_id, values=None, state=None) -> None:
        trial = self._trials.pop(parameter_id)
        frozen = self.study.tell(trial, values=values, state=state)
        self._told[parameter_id] = frozen.state
        if frozen.state == optuna.trial.TrialState.FAIL:
            self._failed[parameter_id] = frozen

    def _add_completed(self, parameter_id, parameters: dict, values: list[float], refused: bool, metrics: dict,
                       like=None):
        """A completed trial with the suggestions of `like` (a trial told as failed), or else made from NNI-shaped
        parameters (the inverse of generate_parameters: NNI's own format_parameters, then the quantile of a normal
        type; a q-type keeps its rounded value)."""
        params = dict(like.params) if like is not None else {}
        distributions = dict(like.distributions) if like is not None else {}
        formatted = {} if like is not None else format_parameters(parameters, self._formatted)
        for key, x in formatted.items():
            spec, name = self._formatted[key], self._path(key)
            if spec.categorical:
                distributions[name] = optuna.distributions.CategoricalDistribution(list(range(spec.size)))
                params[name] = int(x)
            elif spec.normal_distributed:
                distributions[name] = optuna.distributions.FloatDistribution(_QUANTILE, 1 - _QUANTILE)
                u = statistics.NormalDist(spec.mu, spec.sigma).cdf(float(x))
                params[name] = min(max(u, _QUANTILE), 1 - _QUANTILE)
            else:
                distributions[name] = optuna.distributions.FloatDistribution(spec.low, spec.high)
                params[name] = min(max(float(x), spec.low), spec.high)
        trial = optuna.trial.create_trial(params=params, distributions=distributions, values=values,
                                          user_attrs={"nni_parameter_id": parameter_id, "parameters": parameters,
                                                      "metrics": _plain(metrics)},
                                          system_attrs={f"constraints:{REFUSED}": 1.0 if refused else 0.0})
        self.study.add_trial(trial)

    def _write_record(self) -> None:
        if self.record is None:
            return
        try:
            tmp = self.record.with_name(self.record.name + ".tmp")
            tmp.write_text(json.dumps(self.state(), default=str))
            os.replace(tmp, self.record)
        except OSError as err:   # a record that cannot be written must not stop the search
            _logger.warning("ParetoTuner: cannot write %s: %s", self.record, err)


def _is_refused(metrics: dict) -> bool:
    """A trial refused by a constraint before training: it says so (`refused`), or reports a validation accuracy of
    exactly 0 (no trained network scores 0 on a balanced split; the harness reports 0.0 for a refused one, and for a
    run whose loss went non-finite, `diverged`: no model either, so it is infeasible too and never on the front)."""
    return bool(metrics.get(REFUSED)) or metrics.get("default") == 0


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None}
