"""`python -m trial`: the trial entry point (every NNI config's `trialCommand`) and the local debug mode.

The code is trial/adapter.py (import from there, never from this module); `python -m trial --help` lists the options.

    python -m trial --dataset fmnist --smoke                          # one tiny epoch, end to end
"""
from .adapter import exit_with, main

if __name__ == "__main__":
    exit_with(main())
