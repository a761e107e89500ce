"""Local model builders: weights made on this machine, cached, for tests and the default `make serve`.

`ensure_model("tiny")` or `ensure_model("smollm2")` returns a `save_pretrained` folder (safetensors),
building it on first use under the cache dir (`$KAITO_CACHE_DIR`, default `~/.cache/kaito-runtime`).
Building is atomic (temp dir, then rename), so parallel test workers never see half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime.kaito import WEIGHTS_DIR

# Bump when a builder's output changes, so stale caches are rebuilt.
BUILDERS: dict[str, tuple[str, str]] = {
    "tiny": ("runtime.models.tiny", "v1"),
    "smollm2": ("runtime.models.smollm2", "v1"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("KAITO_CACHE_DIR") or Path.home() / ".cache" / "kaito-runtime")


def model_dir(builder: str) -> Path:
    module, version = BUILDERS[builder]
    return cache_dir() / "models" / f"{builder}-{version}"


def ensure_model(builder: str) -> Path:
    """The folder of the model made by `builder`, built if missing."""
    if builder not in BUILDERS:
        raise KeyError(f"unknown model builder {builder!r}; known: {', '.join(BUILDERS)}")
    target = model_dir(builder)
    if (target / "config.json").exists():
        return target
    import importlib

    build: Callable[[Path], None] = importlib.import_module(BUILDERS[builder][0]).build
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: keep theirs
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class NoWeights(ValueError):
    """A weights folder the user named holds no model."""


def local_weights(preset, model_path: str | Path | None = None, candidates: Sequence[str | Path] = (WEIGHTS_DIR,)
                  ) -> Path | None:
    """The folder `preset`'s weights are read from on this machine, for the server and the trainer alike: a path
    the user gave (it must hold a model), else the local builder's cache, else the first of `candidates` holding a
    model (a preset image's baked weights; the trainer's configured folder); None when none does (the server then
    downloads the pinned revision, the trainer refuses)."""
    if model_path:
        if not (Path(model_path) / "config.json").is_file():
            raise NoWeights(f"{model_path} has no config.json (expected a save_pretrained folder)")
        return Path(model_path)
    if preset.local_builder:
        return ensure_model(preset.local_builder)
    for candidate in candidates:
        if (Path(candidate) / "config.json").is_file():  # an empty folder (a download volume) is no model
            return Path(candidate)
    return None
