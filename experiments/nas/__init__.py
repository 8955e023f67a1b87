"""Architecture search with nni.nas over the `nas` family of trial/nas_space.py: space.py (the model space),
multitrial.py (NasExperiment on the local training service), oneshot.py (DARTS, GumbelDARTS, RandomOneShot)."""
