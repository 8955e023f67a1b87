"""`python -m experiments.benchmark`: a short name for `python -m experiments.studies.benchmark` (see there)."""
import sys

from .studies.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
