"""Limits checked before any work (runtime/inference/limits.py): the body size (413) and a prompt's characters
(400 before tokenizing). In process over the scripted FakeBackend (one token per character, so at most 1 character
per token); the slow test checks both on the real server with the tiny model's tokenizer."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from runtime.inference.app import build_app
from runtime.inference.limits import longest_token_chars
from runtime.inference.settings import ServerSettings, resolve_settings
from tests.inference.test_unit import FakeBackend

LIMIT = 4096


class CountingBackend(FakeBackend):
    """Counts what it is asked to tokenize."""

    def __init__(self):
        super().__init__()
        self.tokenized = 0

    def encode_prompt(self, prompt):
        self.tokenized += 1
        return super().encode_prompt(prompt)

    def encode_chat(self, messages):
        self.tokenized += 1
        return super().encode_chat(messages)


@pytest.fixture
def backend():
    return CountingBackend()


@pytest.fixture
def client(backend):
    with TestClient(build_app(ServerSettings(max_request_body_bytes=LIMIT), backend=backend)) as c:
        yield c


def test_the_limit_is_a_setting_a_flag_and_an_environment_variable():
    assert ServerSettings().max_request_body_bytes == 4 * 1024 * 1024
    assert resolve_settings(environ={"KAITO_MAX_REQUEST_BODY_BYTES": "1000000"}).max_request_body_bytes == 1000000
    assert resolve_settings({"max_request_body_bytes": 2048}, environ={}).max_request_body_bytes == 2048


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/v1/load_lora_adapter"])
def test_a_body_over_the_limit_gets_413_in_the_openai_envelope(client, backend, path):
    response = client.post(path, content=b'{"prompt": "' + b"x" * LIMIT + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["param"] == "body" and error["code"] == "request_too_large"
    assert f"limit of {LIMIT} bytes" in error["message"] and "KAITO_MAX_REQUEST_BODY_BYTES" in error["message"]
    assert backend.tokenized == 0
    assert client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200  # the next one


def test_kaitos_chat_gets_413_with_its_detail_body(client):
    response = client.post("/chat", content=b'{"prompt": "' + b"x" * LIMIT + b'"}')
    assert response.status_code == 413
    assert "limit of 4096 bytes" in response.json()["detail"]


def test_a_chunked_body_without_content_length_is_cut_off_at_the_limit(client):
    sent = []

    def chunks():  # no Content-Length: the limit is found while reading
        for _ in range(64):
            sent.append(1)
            yield b"x" * 1024

    response = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "more bytes" in response.json()["error"]["message"]


def test_a_body_at_the_limit_is_served(client):
    prompt = "y" * 40
    body = f'{{"prompt": "{prompt}", "max_tokens": 2}}'
    body += " " * (LIMIT - len(body))  # exactly LIMIT bytes
    response = client.post("/v1/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path,body,param", [
    ("/v1/completions", {"prompt": "z" * 65}, "prompt"),
    ("/v1/completions", {"prompt": ["ok", "z" * 65]}, "prompt[1]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "z" * 40}] * 2}, "messages"),
])
def test_a_prompt_longer_in_characters_than_the_context_can_hold_is_refused_untokenized(client, backend, path, body,
                                                                                         param):
    # FakeBackend: max_model_len 64, at most 1 character per token
    response = client.post(path, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "context_length_exceeded"
    assert "characters" in error["message"] and "max_model_len" in error["message"]
    assert backend.tokenized == (1 if param == "prompt[1]" else 0)  # prompt[0] was fine


def test_kaitos_chat_refuses_a_long_prompt_with_its_detail_body_but_hole_keeps_the_end(client, backend):
    response = client.post("/chat", json={"prompt": "z" * 65})
    assert response.status_code == 400 and "65 characters" in response.json()["detail"]
    assert backend.tokenized == 0
    # handle_long_generation=hole keeps the prompt's end: it must be tokenized, whatever its length
    response = client.post("/chat", json={"prompt": "z" * 500, "handle_long_generation": "hole",
                                          "generate_kwargs": {"max_new_tokens": 4}})
    assert response.status_code == 200, response.text
    assert backend.tokenized == 1 and len(backend.requests[-1].prompt_ids) == 64 - 4


def test_the_longest_token_bounds_the_characters_a_token_covers(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    longest = longest_token_chars(tokenizer)
    assert longest >= max(len(tokenizer.decode([i])) for i in range(len(tokenizer)))
    text = "The capital of France is Paris. 1234567890 ################################ \n\n\t ünïcödé 東京"
    assert len(text) <= len(tokenizer(text)["input_ids"]) * longest
    assert longest_token_chars(object()) == 0  # no vocabulary to read: no pre-check


@pytest.mark.slow
def test_the_real_server_refuses_big_bodies_and_long_prompts_at_once(tiny_server):
    with httpx.Client(base_url=tiny_server.base_url, timeout=60) as http:
        big = http.post("/v1/completions", content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
                        headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["param"] == "body"
        # the tiny model: context 2048, longest token 80 characters
        long = http.post("/v1/completions", json={"model": tiny_server.model, "prompt": "a" * (2048 * 80 + 1)})
        assert long.status_code == 400, long.text
        assert long.json()["error"]["code"] == "context_length_exceeded"
        assert "163841 characters" in long.json()["error"]["message"]
        assert http.get("/health").status_code == 200
