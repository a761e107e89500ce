"""`python -m runtime.inference [PRESET] [flags]`: the same as `kaito serve`."""

import sys

from runtime.inference.cli import main

sys.exit(main())
