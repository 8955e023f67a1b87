"""Everything around the trial harness (trial/): launching NNI experiments, turning them into results, the NNI 3.0
tuners we fix, and studies of the tool itself.

    results/   export (NNI's trials to a table), retrain (winners and baselines over seeds), evaluate (test metrics,
               model export), plots, report (one command from an experiment to a report), predict (exported models)
    launch/    secure (nnictl with the dashboard on 127.0.0.1 only, via the loopback.js, ssh_guard.js and pairing.js
               preloads), local (an experiment run to its end from Python), remote (SSH workers), workers (check, prepare),
               check (the pre-flight, and a running experiment's health), health (is NNI's manager really running),
               new (a ready experiment for a folder of the user's images: audited, sized, written)
    tuners/    FixedTPE and FixedHyperband (NNI configs load them from here), their specs and bracket arithmetic
    studies/   benchmark (speed and memory side by side), search_efficiency (which strategy finds a model fastest),
               and the other studies listed in studies/__init__.py (gpu_check among them)

`python -m experiments.report`, `experiments.secure`, `experiments.check`, `experiments.new` and
`experiments.benchmark` are short names for the modules of
the same name in results/, launch/ and studies/.
"""
