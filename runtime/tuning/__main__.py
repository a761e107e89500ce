"""`python -m runtime.tuning ...` is `kaito tune ...` (what a Kaito tuning Job pod runs)."""

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
