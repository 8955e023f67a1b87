"""`python -m experiments.check`: a short name for `python -m experiments.launch.check` (see there)."""
import sys

from .launch.check import main

if __name__ == "__main__":
    sys.exit(main())
