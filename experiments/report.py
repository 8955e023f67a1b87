"""`python -m experiments.report`: a short name for `python -m experiments.results.report` (see there)."""
import sys

from .results.report import main

if __name__ == "__main__":
    sys.exit(main())
