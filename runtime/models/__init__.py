"""Local model builders: weights made on this machine, cached, for tests and the default `make serve`.

`ensure_model("tiny")` or `ensure_model("smollm2")` returns a `save_pretrained` folder (safetensors),
building it on first use under the cache dir (`$KAITO_CACHE_DIR`, default `~/.cache/kaito-runtime`).
Building is atomic (temp dir, then rename), so parallel test workers never see half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

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
