"""`python -m experiments.new PATH --budget 45m`: a short name for `python -m experiments.launch.new` (see there)."""
import sys

from .launch.new import main

if __name__ == "__main__":
    sys.exit(main())
