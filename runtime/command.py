"""What every area's command handlers raise for a user-facing failure; `kaito` (runtime.cli) prints it.

A module of its own, below every area: the areas' CLI modules raise it, and runtime.cli, the top layer that
gathers their commands, catches it.
"""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2 (or `code`)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def run_command(handler, args, verbose: bool = False) -> int:
    """Run a command handler as every entry point does (`kaito`, `python -m runtime.inference|tuning`): logging
    set up, a CommandError printed as one `error:` line with its exit code, Ctrl-C as 130, a closed pipe quietly."""
    import logging
    import sys

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(handler(args) or 0)
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kaito presets list | head`: the reader left; not an error
        sys.stderr.close()
        return 0
