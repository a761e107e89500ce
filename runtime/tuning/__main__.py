"""`python -m runtime.tuning ...` is `kaito tune ...` (what a Kaito tuning Job pod runs)."""

import sys

from runtime.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
