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
from runtime.inference.metrics import HttpMetricsMiddleware, ServerMetrics
from runtime.inference.serving import Serving
from runtime.inference.settings import ServerSettings
from runtime.inference.unicode_check import ValidUnicodeMiddleware

log = logging.getLogger(__name__)


def build_serving(backend: Backend, settings: ServerSettings, engine_gauges: bool = True) -> Serving:
    """Metrics, admission and the serving layer for `backend` (reusable by another app). `engine_gauges=False`
    where the engine exports its own running/waiting gauges (vLLM)."""
    metrics = ServerMetrics(backend.stats if engine_gauges else None, model_name=backend.base_name)
    admission = Admission(settings.max_batch_size, settings.max_queued_requests, settings.retry_after_s,
                          on_reject=metrics.rejected.inc)
    return Serving(backend, metrics, admission, settings.default_max_tokens)


def build_app(settings: ServerSettings, backend: Backend | None = None,
              on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The server app. `backend` defaults to the transformers backend for `settings` (loaded at startup)."""
    if backend is None:
        from runtime.inference.backends.transformers import TransformersBackend

        backend = TransformersBackend(settings)
    serving = build_serving(backend, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if not backend.ready():
            async def load() -> None:
                try:
                    await asyncio.to_thread(backend.load)
                    log.info("model loaded; ready")
                except BaseException as err:  # report, and let the owner decide (the CLI exits)
                    log.error("loading the model failed: %s", err)
                    if on_load_error:
                        on_load_error(err)

            task = asyncio.create_task(load())
        try:
            yield
        finally:
            if task is not None and not task.done():
                await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(backend.close)

    app = FastAPI(title="kaito-runtime inference server", version="0.1.0", lifespan=lifespan,
                  description="Kaito's POST /chat and the OpenAI API over one engine.")
    app.state.serving = serving
    app.state.backend = backend
    app.include_router(system_router(backend.ready, serving.metrics))
    app.include_router(chat_router(serving, settings.pipeline))
    app.include_router(openai_router(serving))
    app.include_router(adapters_router(serving))
    install_error_handlers(app)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(ValidUnicodeMiddleware)  # innermost: it sees the JSON content type JsonBody sets
    app.add_middleware(JsonBodyMiddleware)
    app.add_middleware(ApiKeyMiddleware, api_key=key)
    app.add_middleware(HttpMetricsMiddleware, metrics=serving.metrics)
    return app
