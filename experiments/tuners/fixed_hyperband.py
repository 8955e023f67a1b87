"""NNI 3.0's Hyperband advisor with its parameter-id comparison fixed: `FixedHyperband`.

Why: Hyperband names its parameter sets with strings such as '0-1_0_5' (bracket, round, serial number), but NNI 3.0's
`Recoverable.is_created_in_previous_exp` compares the id with an int (`param_id <= self.recovered_max_param_id`), so
the built-in advisor dies on the first metric with `'<=' not supported between instances of 'str' and 'int'`
(upstream issue #5263) and the experiment then sits in RUNNING with no new trials.

How: the last part of a Hyperband id is the serial number from the advisor's counter, the same number that a resumed
experiment continues from. This subclass compares that serial number, and also records the serial numbers of string
ids when an experiment is resumed (the base class skips them).

A second fix: with trialConcurrency > 1, NNI 3.0's local training service can hand a trial another trial's parameter
set, and the "trial end" event then names the parameter id NNI recorded, not the one the trial ran (upstream #5726),
so the base class counts the end in the wrong bracket round and may promote a round before its configurations have
finished. This subclass takes the id from the trial's own metric reports (they carry the id it received) when it has
one. Nothing else changes; the budget still reaches the trial as the parameter key `TRIAL_BUDGET` (epochs, see
trial/config.py).

Experiment configs use it as a customized tuner (NNI 3.0 folds the old `advisor:` section into `tuner:`); paths are
relative to the YAML file, here one in nni_configs/:

    tuner:
      codeDirectory: ../experiments/tuners
      className: fixed_hyperband.FixedHyperband
      classArgs: {optimize_mode: maximize, R: 9, eta: 3}

Run `nnictl create --config nni_configs/mnist_hyperband.yml`. Leave `--epochs` out of the trial command: a flag
outranks the sampled `TRIAL_BUDGET`. NNI ignores an assessor under an advisor (Hyperband stops trials itself).
"""
from __future__ import annotations

import nni
from nni.algorithms.hpo.hyperband_advisor import Hyperband


def serial_number(param_id) -> int | None:
    """The advisor-wide counter inside a parameter id: 7 for 7, 5 for '0-1_0_5'; None for ids NNI did not make."""
    if isinstance(param_id, bool):
        return None
    if isinstance(param_id, int):
        return param_id
    if isinstance(param_id, str):
        try:
            return int(param_id.rsplit("_", 1)[-1])
        except ValueError:
            return None
    return None


class FixedHyperband(Hyperband):
    """Hyperband that accepts its own string parameter ids; same class args as NNI's (optimize_mode, R, eta,
    exec_mode)."""

    def is_created_in_previous_exp(self, param_id) -> bool:
        serial = serial_number(param_id)
        return serial is not None and serial <= self.recovered_max_param_id

    def handle_trial_end(self, data):
        reported = self.job_id_para_id_map.get(data["trial_job_id"])   # filled from the trial's own metrics
        record = nni.load(data["hyper_params"])
        if reported is not None and record.get("parameter_id") != reported:
            data = {**data, "hyper_params": nni.dump({**record, "parameter_id": reported})}
        super().handle_trial_end(data)

    def recover_parameter_id(self, data) -> int:
        records = data if isinstance(data, list) else [data]
        previous_max = super().recover_parameter_id(records)
        for record in records:
            if isinstance(record, str):
                record = nni.load(record)
            serial = serial_number(record.get("parameter_id"))
            if serial is not None and serial > previous_max:
                previous_max = serial
        self.recovered_max_param_id = previous_max
        return previous_max
