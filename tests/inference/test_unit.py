"""Fast unit tests of the server's own logic: settings precedence, the HTTP layer's errors, stop strings, /chat's
400s, admission and the adapter scheduler.

The HTTP-layer tests run our real FastAPI app in process (starlette TestClient) over a scripted `FakeBackend`
(no model: it streams fixed text, one character per token), so they take milliseconds; the same paths run against
the real engine over real HTTP in the slow tests.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from runtime.inference.app import build_app
from runtime.inference.backends.base import Delta, EngineStats, ModelCard
from runtime.inference.backends.transformers import AdapterScheduler, adapter_strength, discover_adapters
from runtime.inference.errors import ModelNotFound
from runtime.inference.settings import ServerSettings, SettingsError, resolve_settings


class FakeBackend:
    """Streams `script` (chunks of text, one token per character) for every request."""

    base_name = "fake"
    default_model = "fake"
    max_model_len = 64
    max_token_chars = 1

    def __init__(self, script=("Hello wor", "ld! Bye", "."), finish="stop"):
        self.script = script
        self.finish = finish
        self.requests = []

    def ready(self):
        return True

    def failure(self):
        return None

    def models(self):
        return [ModelCard("fake"), ModelCard("lora", "fake")]

    def resolve_model(self, name):
        if name in (None, "", "fake", "lora"):
            return name or self.default_model
        raise ModelNotFound(f"model {name!r} does not exist", param="model")

    def encode_prompt(self, prompt):
        return [ord(c) for c in prompt]

    def encode_chat(self, messages):
        return [ord(c) for m in messages for c in m["content"]]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        return "".join(chr(i) for i in ids)

    async def stream(self, request):
        self.requests.append(request)
        budget = request.params.max_tokens
        for i, chunk in enumerate(self.script):
            chunk = chunk[:budget]
            budget -= len(chunk)
            last = i == len(self.script) - 1 or budget <= 0
            yield Delta([ord(c) for c in chunk], chunk, (self.finish if budget > 0 else "length") if last else None)
            if last:
                return

    def stats(self):
        return EngineStats()

    async def load_adapter(self, name, path):
        pass

    async def unload_adapter(self, name):
        pass

    def close(self):
        pass


@pytest.fixture
def fake():
    return FakeBackend()


@pytest.fixture
def client(fake):
    with TestClient(build_app(ServerSettings(max_batch_size=1, max_queued_requests=0), backend=fake)) as c:
        yield c


# --- settings ---


def test_settings_precedence_flags_env_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 7000\nmax-queued-requests: 3\nhost: 10.0.0.1\n")
    s = resolve_settings({"port": 9000, "host": None}, environ={"KAITO_PORT": "8000", "KAITO_HOST": "1.2.3.4"},
                         config_file=cfg)
    assert (s.port, s.host, s.max_queued_requests, s.preset) == (9000, "1.2.3.4", 3, "smollm2-135m-instruct")
    assert resolve_settings({}, environ={"VLLM_API_KEY": "k"}).api_key.get_secret_value() == "k"
    assert "zq-secret" not in repr(resolve_settings({}, environ={"API_KEY": "zq-secret"}))


def test_settings_errors_name_the_field_and_source(tmp_path):
    with pytest.raises(SettingsError, match="'port'.*environment"):
        resolve_settings({}, environ={"KAITO_PORT": "eighty"})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_tokens_please: 3\n")
    with pytest.raises(SettingsError, match="max_tokens_please"):
        resolve_settings({}, environ={}, config_file=cfg)


def test_adapter_discovery_and_strength(tmp_path):
    from tests.adapters.test_folder import GOOD, folder, safetensors_bytes

    folder(tmp_path, GOOD, safetensors_bytes(), name="a")
    (tmp_path / "c").mkdir()  # no adapter_config.json: not an adapter
    assert list(discover_adapters(tmp_path)) == ["a"]
    assert discover_adapters(tmp_path / "missing") == {}
    folder(tmp_path, GOOD, None, name="b")  # a config without safetensors weights: refused, not skipped
    with pytest.raises(SettingsError, match="adapters_dir: .*/b lacks adapter_model.safetensors"):
        discover_adapters(tmp_path)
    assert adapter_strength("a", {"a": "0.25"}) == 0.25 and adapter_strength("a", {}) == 1.0
    with pytest.raises(SettingsError, match="a=2.0"):
        adapter_strength("a", {"a": "2"})


# --- HTTP layer ---


def test_validation_errors_are_400_naming_the_field(client):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"
    r = client.post("/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_stop_string_split_across_deltas(client, fake):
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 30, "stop": ["world"]})
    assert r.json()["choices"][0] == {"index": 0, "text": "Hello ", "finish_reason": "stop", "logprobs": None}
    streamed = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 30, "stop": "world", "stream": True})
    lines = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line)["choices"][0] for line in lines[:-1]]
    assert "".join(c["text"] for c in chunks) == "Hello " and chunks[-1]["finish_reason"] == "stop"


def test_max_tokens_capped_by_context_and_prompt_limit(client, fake):
    client.post("/v1/completions", json={"prompt": "x" * 60, "max_tokens": 50})
    assert fake.requests[-1].params.max_tokens == 4  # 64 - 60
    r = client.post("/v1/completions", json={"prompt": "x" * 64})
    assert r.status_code == 400 and "64" in r.json()["error"]["message"] and r.json()["error"]["param"] == "prompt"


def test_greedy_and_sampling_params_reach_the_backend(client, fake):
    client.post("/v1/chat/completions", json={"model": "lora", "messages": [{"role": "user", "content": "hi"}],
                                              "temperature": 0, "seed": 7, "top_p": 0.5, "max_tokens": 3})
    req = fake.requests[-1]
    assert (req.model, req.params.temperature, req.params.seed, req.params.top_p, req.params.max_tokens) == (
        "lora", 0, 7, 0.5, 3)


def test_kaito_chat_400_messages(fake):
    app = build_app(ServerSettings(pipeline="conversational"), backend=fake)
    with TestClient(app) as c:
        r = c.post("/chat", json={"prompt": "hi"})
        assert r.status_code == 400 and r.json() == {"detail": "Conversational parameter messages required"}
    with TestClient(build_app(ServerSettings(), backend=fake)) as c:
        assert c.post("/chat", json={}).json() == {"detail": "Text generation parameter prompt required"}
        r = c.post("/chat", json={"prompt": "hi", "generate_kwargs": {"repetition_penalty": 1.3}})
        assert r.status_code == 400 and "repetition_penalty" in r.json()["detail"]
        r = c.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 9}})
        assert r.json() == {"Result": "hiHello wor"}  # 9 tokens (characters)


def test_form_typed_body_is_read_as_json(client):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded
    r = client.post("/chat", content=b'{"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}}',
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json() == {"Result": "hiHe"}
    r = client.post("/chat", content=b'{"prompt": "hi"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 400  # other types are not rewritten


def test_admission_429_with_retry_after(fake):
    app = build_app(ServerSettings(max_batch_size=1, max_queued_requests=0, retry_after_s=3), backend=fake)
    admission = app.state.serving.admission

    async def hold_one():
        async with admission.slot():
            with TestClient(app) as c:
                return c.post("/v1/completions", json={"prompt": "x"})

    r = asyncio.run(hold_one())
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_api_key_middleware(fake):
    with TestClient(build_app(ServerSettings(api_key="k1"), backend=fake)) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/metrics").status_code == 200


def test_admission_middleware_on_a_foreign_app():
    import asyncio as aio

    from fastapi import FastAPI

    from runtime.inference.admission import Admission, AdmissionMiddleware

    app = FastAPI()
    admission = Admission(max_running=1, max_queued=0, retry_after_s=2)
    app.add_middleware(AdmissionMiddleware, admission=admission)

    @app.post("/v1/completions")
    async def completions():
        return {"ok": True}

    with TestClient(app) as c:
        assert c.post("/v1/completions").json() == {"ok": True}

        async def while_busy():
            async with admission.slot():
                return c.post("/v1/completions")

        r = aio.run(while_busy())
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["error"]["code"] == (
            "rate_limit_exceeded")
        assert admission.in_system == 0


# --- adapter scheduler ---


def test_adapter_scheduler_serves_models_in_turns():
    switches = []

    async def scenario():
        sched = AdapterScheduler(switches.append, current="base")
        order = []

        async def request(model, hold):
            await sched.acquire(model)
            order.append(("in", model, sched.current))
            await asyncio.sleep(hold)
            await sched.release()

        first = asyncio.create_task(request("base", 0.05))
        await asyncio.sleep(0.01)
        other = asyncio.create_task(request("lora", 0.01))
        await asyncio.sleep(0.01)
        late_base = asyncio.create_task(request("base", 0.01))  # must not overtake the waiting lora
        await asyncio.gather(first, other, late_base)
        return order

    order = asyncio.run(scenario())
    assert order == [("in", "base", "base"), ("in", "lora", "lora"), ("in", "base", "base")]
    assert switches == ["lora", "base"]


def test_cli_rejects_bad_preset_and_settings_before_loading():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "runtime.inference", "no-such-preset"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown preset 'no-such-preset'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "runtime.inference", "--port", "0x"], capture_output=True, text=True)
    assert r.returncode == 2 and "--port" in r.stderr
    r = subprocess.run([sys.executable, "-m", "runtime.inference", "tiny-llama", "--max-batch-size", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "max_batch_size" in r.stderr


def test_requests_while_the_model_loads_get_503_not_500():
    """The real transformers backend before its model is loaded: inference routes answer 503, like /health."""
    import threading

    from runtime.inference.backends.transformers import TransformersBackend

    release = threading.Event()

    class StillLoading(TransformersBackend):
        def load(self):  # hold the "loading" state until the test is done
            release.wait(30)

        def close(self):
            pass

    settings = ServerSettings(preset="tiny-llama")
    try:
        with TestClient(build_app(settings, backend=StillLoading(settings))) as c:
            assert c.get("/health").status_code == 503
            r = c.post("/chat", json={"prompt": "hi"})
            assert r.status_code == 503, r.text
            chat = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
            r = c.post("/v1/chat/completions", json=chat)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "service_unavailable"
            release.set()
    finally:
        release.set()


def test_kaito_inference_config_with_vllm_keys_is_accepted(tmp_path):
    """Kaito's inference_config.yaml shape works on the transformers backend: vLLM-only keys are skipped."""
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("max_probe_steps: 6\nkv_cache_cpu_memory_utilization: 0.5\nvllm:\n  max-model-len: 1024\n"
                   "max-queued-requests: 7\n")
    assert resolve_settings({}, {}, cfg).max_queued_requests == 7
    cfg.write_text("max-queued-requestz: 7\n")
    with pytest.raises(SettingsError, match="max-queued-requestz"):
        resolve_settings({}, {}, cfg)


# --- refused at the door ---


def test_an_empty_prompt_is_400_before_the_engine(client, fake):
    r = client.post("/v1/completions", json={"prompt": ["fine", ""], "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt[1]"
    assert "cannot be empty" in r.json()["error"]["message"]
    assert fake.requests == []  # nothing reached the engine
    # One token (what a tokenizer that adds BOS makes of "") is a prompt: served, as vLLM serves it.
    assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_a_request_that_never_fits_is_400_not_429(fake):
    with TestClient(build_app(ServerSettings(max_batch_size=2, max_queued_requests=1), backend=fake)) as c:
        r = c.post("/v1/completions", json={"prompt": ["a", "b", "c", "d"], "max_tokens": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt" and "Retry-After" not in r.headers
        assert "at most 3 at once" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}], "n": 4,
                                                 "stream": True})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"
        assert c.post("/v1/completions", json={"prompt": ["a", "b", "c"], "max_tokens": 1}).status_code == 200
        assert c.app.state.serving.admission.in_system == 0


def test_lone_surrogates_are_found_and_named():
    from runtime.inference.json_body import find_in_body, lone_surrogate

    body = {"model": "m", "messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": "x\ud800"}]}
    assert lone_surrogate(body) == ("messages[1].content", 1)
    assert lone_surrogate({"bad\udc00key": 1}) == ("bad\\udc00key", 3)
    assert lone_surrogate(["fine", {"a": [1, 2.5, None, True]}]) is None
    # A pair of escapes is one character (an emoji): valid.
    assert find_in_body(b'{"prompt": "\\ud83d\\ude00"}') is None
    assert find_in_body(b'{"prompt": "a\\uDFFFb"}') == "prompt"
    assert find_in_body(b'"\\ud800"') == "body"
    assert find_in_body(b'{"prompt": "\\\\ud800 is text"}') is None  # an escaped backslash, not an escape
    deep = b"[" * 100000 + b"]" * 100000
    assert find_in_body(deep + b'"\\ud800"') is None  # not JSON: left to the route's own validation


def test_a_lone_surrogate_is_400_on_every_route(client, fake):
    def post(path, body):  # json.dumps writes the surrogate as an escape, as a client's JSON library would
        return client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    r = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\ud800"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    r = client.post("/chat", content=b'{"prompt": "a\\ud800"}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["detail"].startswith("prompt: not valid Unicode")
    r = post("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "/x\udfff"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_path"
    assert fake.requests == []
    assert client.post("/v1/completions", json={"prompt": "\U0001f600", "max_tokens": 1}).status_code == 200


@pytest.mark.parametrize("body", [b'"a string"', b"[1, 2]", b"3", b"null", b"  true"])
def test_a_json_body_that_is_not_an_object_is_400_naming_the_body(client, fake, body):
    r = client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    assert "must be a JSON object" in r.json()["error"]["message"]
    r = client.post("/chat", content=body)  # curl -d: read as JSON
    assert r.status_code == 400 and "must be a JSON object" in r.json()["detail"]
    assert fake.requests == []


# --- probes ---


class ProbedBackend(FakeBackend):
    def __init__(self, ready: bool, failure: str | None):
        super().__init__()
        self._ready_now, self._failure = ready, failure

    def ready(self):
        return self._ready_now

    def failure(self):
        return self._failure


@pytest.mark.parametrize(("state", "ready", "failure", "health", "live", "ready_probe"), [
    ("loading", False, None, 503, 200, 503),
    ("serving", True, None, 200, 200, 200),
    ("stopped", False, "the generation loop stopped", 503, 503, 503),
])
def test_alive_and_ready_are_two_things(state, ready, failure, health, live, ready_probe):
    # No lifespan (no `with`): the app neither loads nor watches; the probes read the backend as it is.
    c = TestClient(build_app(ServerSettings(api_key="secret"), backend=ProbedBackend(ready, failure)))
    assert c.get("/health").status_code == health  # Kaito's meaning: the model is loaded and the engine runs
    r = c.get("/v1/health/live")  # probes carry no API key
    assert r.status_code == live
    if failure:
        assert r.json() == {"status": "stopped", "detail": failure}
    r = c.get("/v1/health/ready")
    assert r.status_code == ready_probe
    assert r.json()["status"] == {"loading": "loading", "serving": "ready", "stopped": "stopped"}[state]
