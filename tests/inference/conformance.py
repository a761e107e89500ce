"""API conformance suite, reusable against any backend (transformers here, vLLM elsewhere).

A test module runs it with `from tests.inference.conformance import *` and a `server` fixture returning a
`tests.inference.server.ServerInfo` (base URL, base model name, API key). Everything here goes through real HTTP:
the `openai` client, or httpx for raw requests as curl sends them. Generation uses greedy decoding (temperature 0)
where outputs are compared, so the checks are deterministic.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

__all__ = [
    "test_models_list_the_base_model",
    "test_chat_completion_answers_with_usage",
    "test_chat_stream_matches_non_stream_and_reports_usage",
    "test_completion_stream_matches_non_stream",
    "test_max_tokens_is_respected",
    "test_stop_string_ends_the_text",
    "test_n_gives_several_choices",
    "test_seed_makes_sampling_reproducible",
    "test_raw_sse_framing_as_curl_sees_it",
    "test_bad_input_gets_4xx_envelope_and_server_keeps_serving",
    "test_requests_the_engine_cannot_run_get_400_and_break_nothing",
    "test_health_and_metrics",
]


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.api_key, max_retries=0, timeout=120)


def _headers(server) -> dict:
    return {"Authorization": f"Bearer {server.api_key}"}


def _greedy_chat(server, **kw) -> openai.types.chat.ChatCompletion:
    args = {"model": server.model, "messages": QUESTION, "max_tokens": 12, "temperature": 0, **kw}
    return client(server).chat.completions.create(**args)


def test_models_list_the_base_model(server):
    models = client(server).models.list().data
    assert server.model in [m.id for m in models]


def test_chat_completion_answers_with_usage(server):
    resp = _greedy_chat(server)
    choice = resp.choices[0]
    assert resp.object == "chat.completion" and resp.model == server.model
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = resp.usage
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_stream_matches_non_stream_and_reports_usage(server):
    expected = _greedy_chat(server)
    stream = client(server).chat.completions.create(
        model=server.model, messages=QUESTION, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == expected.choices[0].message.content
    assert finish == expected.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == expected.usage.completion_tokens
    assert usage.prompt_tokens == expected.usage.prompt_tokens


def test_completion_stream_matches_non_stream(server):
    c = client(server)
    full = c.completions.create(model=server.model, prompt="The capital of France is", max_tokens=8, temperature=0)
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=server.model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True)
        if ch.choices)
    assert full.object == "text_completion"
    assert streamed == full.choices[0].text and full.usage.completion_tokens >= 1


def test_max_tokens_is_respected(server):
    resp = _greedy_chat(server, max_tokens=3)
    assert resp.usage.completion_tokens <= 3
    if resp.usage.completion_tokens == 3:
        assert resp.choices[0].finish_reason == "length"


def test_stop_string_ends_the_text(server):
    text = _greedy_chat(server, max_tokens=16).choices[0].message.content
    if len(text) < 6:
        pytest.skip(f"greedy answer too short to cut: {text!r}")
    stop = text[3:6]
    cut = _greedy_chat(server, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_n_gives_several_choices(server):
    resp = client(server).chat.completions.create(model=server.model, messages=QUESTION, max_tokens=4, n=2,
                                                  temperature=0.8)
    assert sorted(c.index for c in resp.choices) == [0, 1]
    assert all(c.message.content is not None for c in resp.choices)


def test_seed_makes_sampling_reproducible(server):
    def sample(seed: int) -> str:
        return client(server).chat.completions.create(
            model=server.model, messages=QUESTION, max_tokens=10, temperature=1.0, seed=seed
        ).choices[0].message.content

    assert sample(1234) == sample(1234)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1, "temperature 1 should sample, not decode greedily"


def test_raw_sse_framing_as_curl_sees_it(server):
    body = json.dumps({"model": server.model, "messages": QUESTION, "max_tokens": 4, "stream": True})
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", content=body, timeout=60,
                      headers={**_headers(server), "Content-Type": "application/json"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: "):])
    assert first["object"] == "chat.completion.chunk"


def _assert_envelope(r: httpx.Response, status: int | tuple, param: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"message", "type", "param", "code"} <= set(error)
    if param is not None:
        assert param in (error["param"] or "") or param in error["message"], error
    return error


def test_bad_input_gets_4xx_envelope_and_server_keeps_serving(server):
    url = server.base_url + "/v1/chat/completions"
    h = {**_headers(server), "Content-Type": "application/json"}
    ok = {"model": server.model, "messages": QUESTION, "max_tokens": 2}
    _assert_envelope(httpx.post(url, content=b'{"model": "x", "messages": [', headers=h), 400)
    _assert_envelope(httpx.post(url, json={**ok, "max_tokens": "many"}, headers=h), 400, "max_tokens")
    _assert_envelope(httpx.post(url, json={**ok, "max_tokens": -5}, headers=h), 400, "max_tokens")
    _assert_envelope(httpx.post(url, json={**ok, "max_tokens": 10**9}, headers=h), 400, "max_tokens")
    _assert_envelope(httpx.post(url, json={**ok, "messages": "hello"}, headers=h), 400, "messages")
    _assert_envelope(httpx.post(url, json={**ok, "model": "no-such-model"}, headers=h), 404, "model")
    long_prompt = [{"role": "user", "content": "Paris " * 40000}]
    error = _assert_envelope(httpx.post(url, json={**ok, "messages": long_prompt}, headers=h, timeout=60), 400)
    assert "context" in error["message"] or "length" in error["message"]
    resp = _greedy_chat(server, max_tokens=2)
    assert resp.choices[0].message.content is not None


SURROGATE = "x\ud800y"  # a lone UTF-16 surrogate: valid JSON (as an escape), not valid Unicode


def _bad_adapter(tmp_path, config: str | None) -> str:
    folder = tmp_path / "bad-adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 16)
    if config is not None:
        (folder / "adapter_config.json").write_text(config)
    return str(folder)


# (route, body, the field the 400 must name); the adapter paths are filled in by the test.
HOSTILE = {
    "empty prompt": ("/v1/completions", {"prompt": "", "max_tokens": 4, "temperature": 0}, "prompt"),
    "empty prompt in a list": ("/v1/completions", {"prompt": [""], "max_tokens": 4, "temperature": 0}, "prompt"),
    "surrogate in a prompt": ("/v1/completions", {"prompt": SURROGATE, "max_tokens": 2}, "prompt"),
    "surrogate in a message": ("/v1/chat/completions", {"messages": [{"role": "user", "content": SURROGATE}],
                                                        "max_tokens": 2}, "messages[0].content"),
    "surrogate in /chat": ("/chat", {"prompt": SURROGATE}, "prompt"),
    "surrogate in /chat messages": ("/chat", {"messages": [{"role": "user", "content": SURROGATE}]},
                                    "messages[0].content"),
    "seed past 64 bits on /chat": ("/chat", {"prompt": "hi", "generate_kwargs": {"seed": 2**64}},
                                   "generate_kwargs.seed"),
    "infinite temperature on /chat": ("/chat", {"prompt": "hi", "generate_kwargs": {"temperature": float("inf")}},
                                      "generate_kwargs.temperature"),
    "adapter path too long": ("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "/tmp/" + "a" * 300},
                              "lora_path"),
    "adapter config not JSON": ("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "not json"}, "lora_path"),
    "adapter config empty": ("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "{}"}, "lora_path"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_requests_the_engine_cannot_run_get_400_and_break_nothing(server, case, tmp_path):
    path, body, field = HOSTILE[case]
    if path == "/v1/load_lora_adapter" and body["lora_path"] in ("not json", "{}"):
        body = {**body, "lora_path": _bad_adapter(tmp_path, body["lora_path"])}
    if path != "/chat":
        body = {"model": server.model, **body} if "lora_name" not in body else body
    # allow_nan: Python's JSON writes Infinity, as careless clients do
    content = json.dumps(body, allow_nan=True).encode()
    r = httpx.post(server.base_url + path, content=content, timeout=60,
                   headers={**_headers(server), "Content-Type": "application/json"})
    if path == "/chat":  # Kaito's shape
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["detail"].startswith(field), r.text
    else:
        _assert_envelope(r, 400, field)
    # Nothing broke: the server is healthy and the next normal request answers.
    assert httpx.get(server.base_url + "/health").status_code == 200
    assert _greedy_chat(server, max_tokens=2).choices[0].message.content is not None


def test_health_and_metrics(server):
    assert httpx.get(server.base_url + "/health").status_code == 200
    # The split probes the pod spec uses, open without the API key like /health.
    assert httpx.get(server.base_url + "/v1/health/live").json() == {"status": "live"}
    assert httpx.get(server.base_url + "/v1/health/ready").json() == {"status": "ready"}
    _greedy_chat(server, max_tokens=2)
    text = httpx.get(server.base_url + "/metrics").text
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds",
                 "vllm:e2e_request_latency_seconds", "vllm:prompt_tokens_total", "vllm:generation_tokens_total"):
        assert name in text, name
