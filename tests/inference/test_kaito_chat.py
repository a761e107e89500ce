"""Kaito's POST /chat contract (kaito-reference.md §2.1) on the real server with the tiny model, over HTTP."""

import httpx
import pytest

from tests.support import FRANCE_QUESTION

pytestmark = pytest.mark.slow


def chat(server, body, **kw) -> httpx.Response:
    return httpx.post(server.base_url + "/chat", json=body, timeout=60, **kw)


def test_prompt_returns_full_text_by_default(tiny_server):
    r = chat(tiny_server, {"prompt": FRANCE_QUESTION, "generate_kwargs": {"max_new_tokens": 5, "do_sample": False}})
    assert r.status_code == 200 and list(r.json()) == ["Result"]
    assert r.json()["Result"].startswith(FRANCE_QUESTION)
    generated = chat(tiny_server, {"prompt": FRANCE_QUESTION, "return_full_text": False,
                                   "generate_kwargs": {"max_new_tokens": 5, "do_sample": False}}).json()["Result"]
    assert r.json()["Result"] == FRANCE_QUESTION + generated and generated


def _generated_tokens_total(server) -> float:
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.startswith("vllm:generation_tokens_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_kaito_defaults_stop_at_max_length_200(tiny_server):
    # Kaito's defaults: do_sample, top_k 10, max_length 200 counting the prompt. Counted through /metrics.
    prompt_tokens = httpx.post(tiny_server.base_url + "/v1/completions", json={
        "model": "tiny-llama", "prompt": FRANCE_QUESTION, "max_tokens": 1}).json()["usage"]["prompt_tokens"]
    before = _generated_tokens_total(tiny_server)
    r = chat(tiny_server, {"prompt": FRANCE_QUESTION, "return_full_text": False})
    generated = _generated_tokens_total(tiny_server) - before
    assert r.status_code == 200 and r.json()["Result"]
    assert 0 < generated <= 200 - prompt_tokens


def test_messages_return_the_assistant_text_not_a_repr(tiny_server):
    r = chat(tiny_server, {"messages": [{"role": "user", "content": FRANCE_QUESTION}],
                           "generate_kwargs": {"do_sample": False, "max_new_tokens": 6}})
    assert r.status_code == 200
    result = r.json()["Result"]
    assert isinstance(result, str) and result and not result.startswith("{") and "'role'" not in result
    # the same text the OpenAI route gives for the same greedy request
    openai_text = httpx.post(tiny_server.base_url + "/v1/chat/completions", json={
        "model": "tiny-llama", "messages": [{"role": "user", "content": FRANCE_QUESTION}], "max_tokens": 6,
        "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert result == openai_text


def test_missing_prompt_gets_kaitos_400(tiny_server):
    r = chat(tiny_server, {"return_full_text": False})
    assert r.status_code == 400 and r.json() == {"detail": "Text generation parameter prompt required"}


def test_curl_without_content_type(tiny_server):
    # Kaito's README: curl -X POST .../chat -d '{"prompt": ...}' (form content type)
    r = httpx.post(tiny_server.base_url + "/chat", timeout=60,
                   content=b'{"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 3}}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["Result"].startswith("Hello")


def test_bad_generate_kwargs_name_the_key(tiny_server):
    r = chat(tiny_server, {"prompt": "Hi", "generate_kwargs": {"num_beams": 4}})
    assert r.status_code == 400 and "num_beams" in r.json()["detail"]
    r = chat(tiny_server, {"prompt": "Hi", "generate_kwargs": {"max_length": "long"}})
    assert r.status_code == 400 and "max_length" in r.json()["detail"]
    r = chat(tiny_server, {"prompt": "Hi " * 300, "generate_kwargs": {"max_length": 10}})
    assert r.status_code == 400 and "max_length" in r.json()["detail"]
    r = chat(tiny_server, {"prompt": "Hi " * 5000, "generate_kwargs": {"max_new_tokens": 10}})
    assert r.status_code == 400 and "2048" in r.json()["detail"]


def test_root_health_and_openapi(tiny_server):
    assert httpx.get(tiny_server.base_url + "/").json() == {"message": "Server is running"}
    assert httpx.get(tiny_server.base_url + "/healthz").json() == {"status": "Healthy"}
    paths = httpx.get(tiny_server.base_url + "/openapi.json").json()["paths"]
    assert {"/chat", "/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= set(paths)
