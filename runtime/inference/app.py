"""`build_app(settings)`: the FastAPI app with Kaito's /chat, the OpenAI routes, health, metrics, auth and 429.

The model loads in a worker thread after the server starts, so /health answers 503 until it is ready (then 200).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from runtime.inference.admission import Admission
from runtime.inference.api.chat import chat_router
from runtime.inference.api.openai import adapters_router, openai_router
from runtime.inference.api.system import system_router
from runtime.inference.auth import ApiKeyMiddleware, JsonBodyMiddleware
from runtime.inference.backends.base import Backend
from runtime.inference.errors import install_error_handlers
from runtime.inference.json_body import JsonBodyCheckMiddleware
from runtime.inference.limits import BodyLimitMiddleware
from runtime.inference.metrics import HttpMetricsMiddleware, ServerMetrics
from runtime.inference.serving import Serving
from runtime.inference.settings import ServerSettings

log = logging.getLogger(__name__)


def build_serving(backend: Backend, settings: ServerSettings, engine_gauges: bool = True) -> Serving:
    """Metrics, admission and the serving layer for `backend` (reusable by another app). `engine_gauges=False`
    where the engine exports its own running/waiting gauges (vLLM)."""
    metrics = ServerMetrics(backend.stats if engine_gauges else None, model_name=backend.base_name)
    admission = Admission(settings.max_batch_size, settings.max_queued_requests, settings.retry_after_s,
                          on_reject=metrics.rejected.inc)
    return Serving(backend, metrics, admission, settings.default_max_tokens)


class EngineStopped(RuntimeError):
    """The engine stopped for good after loading; the process must exit so that Kubernetes restarts the pod."""


WATCH_INTERVAL_S = 0.5


def build_app(settings: ServerSettings, backend: Backend | None = None,
              on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The server app. `backend` defaults to the transformers backend for `settings` (loaded at startup).

    `on_fatal(error)` is called when loading fails or when the engine stops later (EngineStopped); the owner
    (the CLI) exits non-zero. Until then readiness is 503 and requests get 503 with Retry-After."""
    if backend is None:
        from runtime.inference.backends.transformers import TransformersBackend

        backend = TransformersBackend(settings)
    serving = build_serving(backend, settings)

    async def load() -> None:
        try:
            await asyncio.to_thread(backend.load)
            log.info("model loaded; ready")
        except BaseException as err:  # report, and let the owner decide (the CLI exits)
            log.error("loading the model failed: %s", err)
            if on_fatal:
                on_fatal(err)

    async def watch(loading: asyncio.Task | None) -> None:
        """A stopped engine never comes back: say so once, and let the owner exit so that the pod restarts."""
        if loading is not None:
            await asyncio.shield(loading)  # stopping the watch must not stop a load half-way
            if not backend.ready():
                return  # loading failed: load() reported it
        while (reason := backend.failure()) is None:
            await asyncio.sleep(WATCH_INTERVAL_S)
        log.error("engine stopped: %s; exiting so that the pod restarts", reason)
        if on_fatal:
            on_fatal(EngineStopped(reason))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = None if backend.ready() else asyncio.create_task(load())
        watcher = asyncio.create_task(watch(loading))
        try:
            yield
        finally:
            watcher.cancel()
            if loading is not None:
                await asyncio.gather(loading, return_exceptions=True)
            await asyncio.gather(watcher, return_exceptions=True)
            await asyncio.to_thread(backend.close)

    app = FastAPI(title="kaito-runtime inference server", version="0.1.0", lifespan=lifespan,
                  description="Kaito's POST /chat and the OpenAI API over one engine.")
    app.state.serving = serving
    app.state.backend = backend
    app.include_router(system_router(backend.ready, serving.metrics, backend.failure))
    app.include_router(chat_router(serving, settings.pipeline))
    app.include_router(openai_router(serving))
    app.include_router(adapters_router(serving))
    install_error_handlers(app)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(JsonBodyCheckMiddleware)  # innermost: it sees the JSON content type JsonBody sets
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=key)
    app.add_middleware(HttpMetricsMiddleware, metrics=serving.metrics)
    return app
