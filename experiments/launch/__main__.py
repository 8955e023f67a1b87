"""`python -m experiments.launch CONFIG --workers workers.yml`: start a search on SSH workers (launch/remote.py)."""
import sys

from .remote import main

if __name__ == "__main__":
    sys.exit(main())
