"""Overload (429 + Retry-After), client disconnects (streaming and not) cancelling generation, and the API key.

The tiny model served with room for one running and one waiting request; what happens inside is observed through
/metrics (vllm:num_requests_running/waiting, kaito_requests_cancelled_total, kaito_ratelimit_rejected_total).
"""

import time

import httpx
import openai
import pytest

from tests.inference.server import run_server
from tests.support import wait_until

pytestmark = pytest.mark.slow

# Greedy: the tiny model then never samples its end token within 1900 tokens (with sampling it sometimes did, and
# a request that finishes early cannot be overloaded or cancelled), so each request runs for seconds.
LONG = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Tell me everything."}],
        "max_tokens": 1900, "temperature": 0}


@pytest.fixture(scope="module")
def small_server(tiny_model_dir, tmp_path_factory):
    empty = tmp_path_factory.mktemp("none")
    args = ["tiny-llama", "--adapters-dir", str(empty), "--max-batch-size", "1", "--max-queued-requests", "1"]
    with run_server(args, model="tiny-llama") as info:
        yield info


def metric(server, name: str) -> float:
    total = 0.0
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_overload_gets_429_and_disconnects_cancel(small_server):
    s = small_server
    url = s.base_url + "/v1/chat/completions"
    with httpx.Client(timeout=60) as c1, httpx.Client(timeout=60) as c2:
        with c1.stream("POST", url, json={**LONG, "stream": True}) as r1:
            assert r1.status_code == 200
            first = r1.iter_lines()
            next(first)  # the role chunk: request 1 holds its place
            wait_until("request 1 running", lambda: metric(s, "vllm:num_requests_running") == 1)
            with c2.stream("POST", url, json={**LONG, "stream": True}) as r2:
                assert r2.status_code == 200  # admitted, waiting behind request 1
                wait_until("request 2 waiting", lambda: metric(s, "vllm:num_requests_waiting") == 1)
                over = httpx.post(url, json={**LONG, "max_tokens": 5}, timeout=30)
                assert over.status_code == 429
                assert int(over.headers["Retry-After"]) >= 1
                assert over.json()["error"]["code"] == "rate_limit_exceeded"
                assert metric(s, "kaito_ratelimit_rejected_total") == 1
            # leaving the blocks closes both connections mid-generation
    wait_until("both cancelled", lambda: metric(s, "kaito_requests_cancelled_total") >= 2)
    wait_until("an idle engine", lambda: metric(s, "vllm:num_requests_running") == 0
               and metric(s, "vllm:num_requests_waiting") == 0)
    generated = metric(s, "vllm:generation_tokens_total")
    time.sleep(1.0)
    assert metric(s, "vllm:generation_tokens_total") == generated, "generation went on after the clients left"


def test_non_streaming_disconnect_cancels(small_server):
    s = small_server
    cancelled = metric(s, "kaito_requests_cancelled_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(s.base_url + "/v1/chat/completions", json=LONG, timeout=httpx.Timeout(60, read=1.5))
    wait_until("the cancellation", lambda: metric(s, "kaito_requests_cancelled_total") == cancelled + 1)
    wait_until("nothing running", lambda: metric(s, "vllm:num_requests_running") == 0)
    ok = httpx.post(s.base_url + "/v1/chat/completions", json={**LONG, "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_api_key_guards_everything_but_health_and_metrics(tiny_model_dir, tmp_path):
    key = "s3cret-test-key"
    with run_server(["tiny-llama", "--adapters-dir", str(tmp_path)], model="tiny-llama",
                    env={"KAITO_API_KEY": key}, api_key=key) as s:
        url = s.base_url + "/v1/chat/completions"
        body = {**LONG, "max_tokens": 2}
        assert httpx.post(url, json=body).status_code == 401
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        assert httpx.post(s.base_url + "/chat", json={"prompt": "hi"}).status_code == 401
        assert httpx.get(s.base_url + "/health").status_code == 200
        assert httpx.get(s.base_url + "/metrics").status_code == 200
        c = openai.OpenAI(base_url=s.base_url + "/v1", api_key=key, max_retries=0)
        assert c.chat.completions.create(model="tiny-llama", messages=LONG["messages"], max_tokens=2).choices
        log = s.log_text()
    assert key not in log
