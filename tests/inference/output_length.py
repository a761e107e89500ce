"""Equal work, as benchmark tools force it: `ignore_eos` and `min_tokens` (vLLM's OpenAI extensions) and Kaito's
`generate_kwargs.min_new_tokens` / `min_length`, checked by counting tokens on a model that ends its answers by
itself (SmolLM2 answers the France question in about 10 tokens). Shared by both backends' tiers
(tests/inference/test_output_length.py, tests/vllm/test_output_length_vllm.py)."""

from __future__ import annotations

import httpx
import openai

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MAX = 48


def check_output_lengths(base_url: str, model: str, headers: dict[str, str] | None = None) -> None:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=120,
                           default_headers=headers)

    def chat(**extra):
        return client.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX, temperature=0,
                                              extra_body=extra or None)

    natural = chat()
    ended = natural.usage.completion_tokens
    assert natural.choices[0].finish_reason == "stop" and ended < MAX - 8, natural  # the model ends by itself

    forced = chat(ignore_eos=True)
    assert forced.usage.completion_tokens == MAX and forced.choices[0].finish_reason == "length"
    assert forced.choices[0].message.content.startswith(natural.choices[0].message.content.rstrip())

    at_least = ended + 5
    longer = chat(min_tokens=at_least)
    assert longer.usage.completion_tokens >= at_least
    assert longer.choices[0].message.content.startswith(natural.choices[0].message.content.rstrip())

    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=MAX,
                                           temperature=0, extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == MAX

    stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    assert [chunk.usage for chunk in stream if chunk.usage][-1].completion_tokens == MAX

    try:
        chat(min_tokens=MAX + 1)
        raise AssertionError("min_tokens above max_tokens was accepted")
    except openai.BadRequestError as err:
        assert "min_tokens" in str(err)

    # Kaito's /chat: min_new_tokens gives the same greedy text as the OpenAI route's min_tokens
    kaito = httpx.post(base_url + "/chat", headers=headers, timeout=120, json={
        "messages": QUESTION, "generate_kwargs": {"do_sample": False, "max_new_tokens": MAX,
                                                  "min_new_tokens": at_least}})
    assert kaito.status_code == 200, kaito.text
    assert kaito.json()["Result"] == longer.choices[0].message.content
    natural_kaito = httpx.post(base_url + "/chat", headers=headers, timeout=120, json={
        "messages": QUESTION, "generate_kwargs": {"do_sample": False, "max_new_tokens": MAX}})
    assert natural_kaito.json()["Result"] == natural.choices[0].message.content
    refused = httpx.post(base_url + "/chat", headers=headers, timeout=120, json={
        "prompt": "Hi", "generate_kwargs": {"max_new_tokens": 4, "min_new_tokens": 5}})
    assert refused.status_code == 400 and "min_new_tokens" in refused.json()["detail"]
