"""NNI 3.0's TPE tuner made to survive mis-paired trial ends: `FixedTPE`.

Why: with trialConcurrency > 1, NNI 3.0's local training service hands each parameter set to whichever trial asks
first, while its own record (REST API, dashboard, and the "trial end" event sent to the tuner) keeps the set the trial
was submitted with (upstream #5726, #5693). A trial's end can therefore name another, still running trial's
parameter_id. TPE's `trial_end` drops that id from its running set, and when the other trial then reports its final
result (with the right id: it comes from the trial), `receive_trial_result` fails with `KeyError` in
`self._running_params.pop(parameter_id)` (upstream #5739, #5798). The dispatcher dies, and the experiment goes on
showing RUNNING with no new trials. Seen here on the second trial of a 2-trial-concurrent experiment.

How: a result for an id that `trial_end` already dropped is put back from TPE's record of every id it generated,
then handled as usual. Nothing else changes (TPE's "constant liar" may miss a running set for a while).

Experiment configs load it as a customized tuner (paths relative to the YAML, here one in nni_configs/):

    tuner:
      codeDirectory: ../experiments/tuners
      className: fixed_tpe.FixedTPE
      classArgs: {optimize_mode: maximize}
"""
from __future__ import annotations

from nni.algorithms.hpo.tpe_tuner import TpeTuner


class FixedTPE(TpeTuner):
    """TPE that accepts a result after NNI has reported the end of that parameter id under another trial; same class
    args as NNI's TPE (optimize_mode, seed, tpe_args)."""

    def receive_trial_result(self, parameter_id, parameters, value, **kwargs):
        if parameter_id not in self._running_params and parameter_id in self._params:
            self._running_params[parameter_id] = self._params[parameter_id]
        super().receive_trial_result(parameter_id, parameters, value, **kwargs)
