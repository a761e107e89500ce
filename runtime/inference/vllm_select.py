"""Which backend serves: `--runtime vllm|transformers`, else vLLM where the preset prefers it and vLLM is installed.

Standard library (plus the stdlib-only `presets`) so that `python -m runtime.inference` can decide before it
imports torch, transformers or vLLM.
"""

from __future__ import annotations

import importlib.util

RUNTIMES = ("vllm", "transformers")


def vllm_installed() -> bool:
    """True when `import vllm` would find a package (without importing it: that takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _preset_name(argv: list[str]) -> str | None:
    named = _option(argv, "--preset")
    if named:
        return named
    # The first positional argument, as in `kaito serve PRESET`; skip option values.
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = "=" not in arg and arg not in ("-v", "--verbose", "--print-args")
            continue
        return arg
    return None


def choose_runtime(argv: list[str], default_preset: str | None = None) -> str:
    """`vllm` or `transformers` for this command line (`KAITO_RUNTIME` is read with the other settings, before).

    Raises ValueError for an unknown runtime name or vLLM asked for on a preset that does not support it.
    """
    asked = _option(argv, "--runtime")
    if asked is not None and asked not in RUNTIMES:
        raise ValueError(f"--runtime: unknown runtime {asked!r}; choose one of {', '.join(RUNTIMES)}")
    name = _preset_name(argv) or default_preset
    preset = None
    if name:
        import presets

        try:
            preset = presets.get(name)
        except KeyError:
            preset = None  # the server itself reports the unknown preset with the list of names
    if asked == "vllm" and preset is not None and "vllm" not in preset.runtimes:
        raise ValueError(f"--runtime vllm: preset {preset.name} supports only {', '.join(preset.runtimes)}")
    if asked:
        return asked
    if preset is not None and preset.runtimes and preset.runtimes[0] == "vllm" and vllm_installed():
        return "vllm"
    return "transformers"


def runtime_for(runtime: str | None, preset: str | None) -> str:
    """The backend for `kaito serve`'s parsed `--runtime` and PRESET (None: not given)."""
    argv = ([preset] if preset else []) + (["--runtime", runtime] if runtime else [])
    from runtime.inference.settings import DEFAULT_PRESET

    return choose_runtime(argv, default_preset=DEFAULT_PRESET)
