"""GET /, /health (and /healthz), /v1/health/live and /v1/health/ready, /metrics: probes and scraping."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from runtime.inference.metrics import ServerMetrics
from runtime.kaito import HEALTH_PATH, LIVE_PATH, READY_PATH


def system_router(ready, metrics: ServerMetrics, failure=lambda: None) -> APIRouter:
    """`ready()` -> bool: whether the model is loaded and the engine runs; `failure()` -> why the engine stopped
    for good, or None (runtime/kaito says what each probe means)."""
    router = APIRouter(tags=["system"])

    @router.get("/")
    async def root() -> dict:
        return {"message": "Server is running"}

    @router.get(HEALTH_PATH)
    @router.get("/healthz", include_in_schema=False)
    async def health():
        if ready():
            return {"status": "Healthy"}
        return JSONResponse({"detail": "Model not initialized"}, status_code=503)

    @router.get(LIVE_PATH)
    async def live():
        reason = failure()
        if reason is None:
            return {"status": "live"}
        return JSONResponse({"status": "stopped", "detail": reason}, status_code=503)

    @router.get(READY_PATH)
    async def ready_probe():
        if ready():
            return {"status": "ready"}
        state = "stopped" if failure() is not None else "loading"
        return JSONResponse({"status": state}, status_code=503)

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=ServerMetrics.CONTENT_TYPE)

    return router
