"""The preset library: one module per model family, each registering typed, immutable presets by name.

`import presets` is cheap: standard library only, no torch, transformers or vLLM (tests check it).

    >>> import presets
    >>> presets.get("phi-3-mini-4k-instruct").hf_repo
    'microsoft/Phi-3-mini-4k-instruct'
"""

from __future__ import annotations

import importlib

from presets._schema import (
    NAME_PATTERN,
    Architecture,
    KaitoFigures,
    Preset,
    TuningSupport,
)

__all__ = ["Architecture", "KaitoFigures", "Preset", "TuningSupport", "register", "get", "names", "all_presets",
           "UnknownPreset"]

_REGISTRY: dict[str, Preset] = {}

# Family modules, imported (in this order) on first use of the registry.
_FAMILIES = ("local", "phi3", "phi4", "falcon", "mistral", "qwen", "llama", "deepseek", "gemma", "gpt_oss")
_loaded = False


class UnknownPreset(KeyError):
    """Raised for a name that no preset is registered under; the message lists what exists."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(*items: Preset) -> None:
    """Register presets. Names must be unique, lower-case and DNS-1123-like (they become image names)."""
    for preset in items:
        if not isinstance(preset, Preset):
            raise TypeError(f"register() takes Preset objects, got {type(preset).__name__}")
        if not NAME_PATTERN.match(preset.name):
            raise ValueError(f"preset name {preset.name!r} must be lower-case letters, digits, '-' or '.'")
        if preset.name in _REGISTRY and _REGISTRY[preset.name] is not preset:
            raise ValueError(f"preset {preset.name!r} is registered twice")
        _REGISTRY[preset.name] = preset


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for family in _FAMILIES:
        try:
            importlib.import_module(f"presets.{family}")
        except ModuleNotFoundError as err:
            if err.name != f"presets.{family}":
                raise


def get(name: str) -> Preset:
    """The preset registered as `name` (case-insensitive)."""
    _load()
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownPreset(f"unknown preset {name!r}; known presets: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def all_presets() -> list[Preset]:
    _load()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
