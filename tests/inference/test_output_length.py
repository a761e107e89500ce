"""ignore_eos, min_tokens and min_new_tokens on the transformers backend (tests/inference/output_length.py)."""

import pytest

from tests.inference.output_length import check_output_lengths
from tests.inference.server import run_server

pytestmark = pytest.mark.slow


def test_output_lengths_are_forced_as_asked(smollm2_dir, tmp_path):
    with run_server(["--adapters-dir", str(tmp_path)], model="smollm2-135m-instruct") as server:
        check_output_lengths(server.base_url, server.model)
