"""The OpenAI conformance suite (tests/inference/conformance.py) against our server on the tiny model."""

import pytest

from tests.inference.conformance import *  # noqa: F403

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tiny_server):
    return tiny_server
