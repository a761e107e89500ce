"""`kaito`: the command line. Each area contributes its own sub-commands through `add_commands(subparsers)`.

Area CLI modules import only the standard library at module level; heavy libraries are imported inside
the command handlers, so `kaito presets list` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from runtime.command import CommandError, run_command  # noqa: F401 (CommandError re-exported for callers)

# Modules that contribute sub-commands, in help order.
AREAS = (
    "runtime.sizing.cli",  # presets, plan
    "runtime.models.cli",  # models
    "runtime.inference.cli",  # serve
    "runtime.tuning.cli",  # tune
    "runtime.adapters.cli",  # adapter push|pull
    "runtime.images.cli",  # images list|build|context
    "runtime.controller.cli",  # render, apply, get, controller, run
)




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito", description="Serve and fine-tune open LLMs, Kaito-style.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for area in AREAS:
        try:
            module = importlib.import_module(area)
        except ModuleNotFoundError as err:
            if err.name == area:
                continue  # area not built yet
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
