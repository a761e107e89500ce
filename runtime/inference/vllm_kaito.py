"""Our Kaito layer on vLLM's FastAPI app: the same pieces the transformers server uses, attached to vLLM's app.

No vLLM import: it works on any FastAPI app plus a `Backend` (runtime/inference/backends/base.py).

- Routes, matched before vLLM's: `POST /chat` (Kaito), `GET /`, `/health`, `/healthz`, `/metrics`, and the
  runtime-LoRA endpoints (so `oci://` adapter references work as on the transformers server).
- `/metrics`: vLLM's registry (engine metrics, `vllm:*`, which count /chat requests too since they run on the
  same engine) followed by our `kaito_*` metrics. Our own `vllm:*` series are left out: they would duplicate
  the engine's.
- 429: one admission gate (max_num_seqs running + max_queued_requests waiting) for /chat and for vLLM's
  inference routes alike, with Retry-After and our error envelope.
- Auth and HTTP counting: our ASGI middleware, outermost, so 401s and 429s are counted too.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import generate_latest

from runtime.inference.admission import AdmissionMiddleware
from runtime.inference.app import build_serving
from runtime.inference.errors import install_error_handlers
from runtime.inference.json_body import JsonBodyCheckMiddleware
from runtime.inference.limits import BodyLimitMiddleware
from runtime.inference.metrics import HttpMetricsMiddleware, ServerMetrics
from runtime.inference.settings import ServerSettings

# vLLM routes that run the engine: guarded by the admission gate. Others (models, tokenize, health) stay open.
INFERENCE_PATHS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/v1/embeddings",
    "/v1/score", "/v1/rerank", "/inference/v1/generate", "/pooling", "/classify",
})  # fmt: skip


class CombinedMetrics:
    """What system_router's /metrics renders: vLLM's registry, then ours without the duplicate `vllm:` series."""

    CONTENT_TYPE = ServerMetrics.CONTENT_TYPE

    def __init__(self, ours: ServerMetrics, engine_registry) -> None:
        self.ours = ours
        self.engine_registry = engine_registry

    def collect(self):
        for metric in self.ours.registry.collect():
            if not metric.name.startswith("vllm:"):
                yield metric

    def render(self) -> bytes:
        return generate_latest(self.engine_registry) + generate_latest(self)


class OnlyOnPaths:
    """Apply an ASGI middleware to some paths only (the rest of vLLM's routes see requests untouched)."""

    def __init__(self, app, middleware, paths: frozenset[str]) -> None:
        self.app = app
        self.wrapped = middleware(app)
        self.paths = paths

    async def __call__(self, scope, receive, send):
        target = self.wrapped if scope["type"] == "http" and scope.get("path") in self.paths else self.app
        return await target(scope, receive, send)


def _to_front(app: FastAPI, router) -> None:
    """Include `router` and move its routes before vLLM's, so ours win on shared paths (/health, /metrics)."""
    before = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = added


def attach(app: FastAPI, backend, settings: ServerSettings, max_num_seqs: int, engine_registry) -> None:
    """Attach /chat, health, metrics, admission, auth and our error envelope to vLLM's `app`."""
    from runtime.inference.api.chat import chat_router
    from runtime.inference.api.openai import adapters_router
    from runtime.inference.api.system import system_router
    from runtime.inference.auth import ApiKeyMiddleware, JsonBodyMiddleware

    # The gate counts what vLLM batches (its max_num_seqs), not the transformers default.
    settings = settings.model_copy(update={"max_batch_size": max_num_seqs})
    serving = build_serving(backend, settings, engine_gauges=False)  # vLLM exports its own
    app.state.serving = serving
    app.state.backend = backend
    metrics = CombinedMetrics(serving.metrics, engine_registry)
    for router in (adapters_router(serving), chat_router(serving, settings.pipeline),
                   system_router(backend.ready, metrics, backend.failure)):
        _to_front(app, router)
    install_error_handlers(app)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    # vLLM's set-up has already built the middleware stack once; nothing has been served yet, so drop it and let
    # Starlette rebuild it, with ours, on the first request. The last middleware added is the outermost.
    app.middleware_stack = None
    app.add_middleware(AdmissionMiddleware, admission=serving.admission, paths=INFERENCE_PATHS)
    app.add_middleware(JsonBodyCheckMiddleware)  # inside JsonBody, which gives /chat's curl bodies a JSON type
    # Kaito's documented `curl -d '{...}' /chat` sends a form content type; only /chat reads it as JSON (vLLM's
    # routes keep theirs: multipart uploads must stay multipart).
    app.add_middleware(OnlyOnPaths, middleware=JsonBodyMiddleware, paths=frozenset({"/chat"}))
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=key)
    app.add_middleware(HttpMetricsMiddleware, metrics=serving.metrics)
