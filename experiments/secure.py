"""`python -m experiments.secure`: a short name for `python -m experiments.launch.secure` (see there)."""
import sys

from .launch.secure import main

if __name__ == "__main__":
    sys.exit(main())
