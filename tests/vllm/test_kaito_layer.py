"""Our layer on a vLLM-shaped FastAPI app (runtime/inference/vllm_kaito.py), without vLLM: route order, combined
metrics, the admission gate on vLLM's routes, API key, JSON bodies on /chat only. The vllm tier checks the same
against real vLLM; this keeps the wiring covered in the fast tier."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Gauge

from runtime.inference.backends.base import EngineStats, ModelCard
from runtime.inference.settings import ServerSettings
from runtime.inference.vllm_kaito import attach


class IdleBackend:
    """The Backend protocol's read side: enough for health, metrics and /chat's validation."""

    base_name = default_model = "m"
    max_model_len = 64
    max_token_chars = 1

    def ready(self) -> bool:
        return True

    def failure(self):
        return None

    def models(self):
        return [ModelCard(id="m")]

    def stats(self) -> EngineStats:
        return EngineStats(running=0, waiting=0)


def vllm_like_app(registry) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def vllm_health():
        return "vllm-health"

    @app.get("/metrics")
    async def vllm_metrics():
        return "vllm-metrics"

    @app.post("/v1/completions")
    async def completions():
        return {"ok": True}

    async def json_only(request: Request):  # vLLM's validate_json_request: plain-string errors, not pydantic's
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            raise RequestValidationError(errors=["Unsupported Media Type: Only 'application/json' is allowed"])

    @app.post("/scale_elastic_ep", dependencies=[Depends(json_only)])
    async def reads_its_body_by_hand(request: Request):  # as vLLM's route does: a JSON list made it a 500
        return {"size": (await request.json()).get("new_data_parallel_size")}

    @app.post("/v1/audio/transcriptions")
    async def upload(request: Request):
        return {"content_type": request.headers["content-type"]}

    return app


@pytest.fixture
def layered():
    def make(api_key=None, max_request_body_bytes=4 * 1024 * 1024):
        registry = CollectorRegistry()
        Gauge("vllm:num_requests_running", "engine gauge", ["model_name"], registry=registry).labels("m").set(3)
        app = vllm_like_app(registry)
        settings = ServerSettings(preset="tiny-llama", api_key=api_key, max_queued_requests=1,
                                  max_request_body_bytes=max_request_body_bytes)
        attach(app, IdleBackend(), settings, max_num_seqs=2, engine_registry=registry)
        return app, TestClient(app)

    return make


def test_our_routes_win_and_metrics_combine_without_duplicates(layered):
    app, client = layered()
    assert client.get("/health").json() == {"status": "Healthy"}
    assert client.post("/v1/completions").json() == {"ok": True}
    text = client.get("/metrics").text
    assert 'vllm:num_requests_running{model_name="m"} 3.0' in text  # the engine's figure, not our own gauge
    assert text.count("# TYPE vllm:num_requests_running gauge") == 1
    assert 'kaito_http_requests_total{method="POST",path="/v1/completions",status="200"} 1.0' in text


def test_admission_gate_covers_vllm_routes(layered):
    app, client = layered()
    admission = app.state.serving.admission
    assert admission.capacity == 3  # vLLM's max_num_seqs (2) + max_queued_requests (1)
    admission.in_system = admission.capacity
    r = client.post("/v1/completions")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert client.get("/health").status_code == 200  # probes are never gated
    admission.in_system = 0
    assert client.post("/v1/completions").status_code == 200
    assert "kaito_ratelimit_rejected_total 1.0" in client.get("/metrics").text


def test_the_body_limit_covers_vllm_routes(layered):
    app, client = layered(max_request_body_bytes=2048)
    r = client.post("/v1/completions", content=b"x" * 2049)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert client.post("/v1/completions", content=b"x" * 2048).json() == {"ok": True}


def test_a_vllm_route_that_reads_its_body_by_hand_gets_400_for_a_json_list_not_500(layered):
    app, client = layered()
    r = client.post("/scale_elastic_ep", content=b"[]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    assert client.post("/scale_elastic_ep", json={"new_data_parallel_size": 2}).json() == {"size": 2}


def test_a_validation_error_raised_with_plain_messages_is_400_not_500(layered):
    app, client = layered()
    r = client.post("/scale_elastic_ep")  # no content type: vLLM's check raises RequestValidationError(["..."])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "Unsupported Media Type: Only 'application/json' is allowed"


def test_api_key_and_json_bodies(layered):
    app, client = layered(api_key="k")
    assert client.post("/v1/completions").status_code == 401
    assert client.post("/v1/completions", headers={"Authorization": "Bearer k"}).status_code == 200
    assert client.get("/health").status_code == 200
    auth = {"Authorization": "Bearer k", "content-type": "application/x-www-form-urlencoded"}
    chat = client.post("/chat", content=b"{}", headers=auth)  # curl -d: read as JSON, so Kaito's 400
    assert chat.status_code == 400 and chat.json() == {"detail": "Text generation parameter prompt required"}
    files = client.post("/v1/audio/transcriptions", headers={"Authorization": "Bearer k"}, files={"f": b"x"})
    assert files.json()["content_type"].startswith("multipart/form-data")  # vLLM's routes untouched
