"""What every area's command handlers raise for a user-facing failure; `kaito` (runtime.cli) prints it.

A module of its own, below every area: the areas' CLI modules raise it, and runtime.cli, the top layer that
gathers their commands, catches it.
"""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2 (or `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
