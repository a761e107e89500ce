"""`kaito models prepare NAME`: build or convert a local model (tiny, smollm2) into the cache."""

from __future__ import annotations


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="build the local models (tiny test model, SmolLM2 default model)")
    s = p.add_subparsers(dest="models_command", required=True)
    prep = s.add_parser("prepare", help="build a local model into the cache and print its folder")
    from runtime.models import BUILDERS  # standard library only

    prep.add_argument("builder", choices=sorted(BUILDERS))
    prep.set_defaults(handler=_prepare)


def _prepare(args) -> int:
    from runtime.models import ensure_model

    print(ensure_model(args.builder))
    return 0
