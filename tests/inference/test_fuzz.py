"""The schema-driven fuzz run (tests/inference/fuzz.py) against the transformers backend on the tiny model."""

from __future__ import annotations

import pytest

from tests.inference import fuzz
from tests.inference.server import run_server

pytestmark = pytest.mark.slow

EXAMPLES = 40
"""Per operation and mode: about 400 requests, half a minute."""


def test_no_request_gets_a_5xx_every_4xx_has_the_envelope_and_the_server_still_serves(tiny_model_dir, tmp_path):
    with run_server(["tiny-llama", "--adapters-dir", str(tmp_path)], model="tiny-llama") as server:
        sent = fuzz.run(server.base_url, EXAMPLES)
        print(f"\nfuzzed {sum(sent.values())} requests: {sent}")
        assert {"POST /chat", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/load_lora_adapter",
                "POST /v1/unload_lora_adapter", "GET /v1/models", "GET /health", "GET /metrics"} <= sent.keys()
        fuzz.check_still_serving(server.base_url, server.model)
