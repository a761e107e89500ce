"""GET /, /health (and /healthz), /metrics: probes and scraping."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from runtime.inference.metrics import ServerMetrics


def system_router(ready, metrics: ServerMetrics) -> APIRouter:
    """`ready()` -> bool: whether the model is loaded and the engine runs."""
    router = APIRouter(tags=["system"])

    @router.get("/")
    async def root() -> dict:
        return {"message": "Server is running"}

    @router.get("/health")
    @router.get("/healthz", include_in_schema=False)
    async def health():
        if ready():
            return {"status": "Healthy"}
        return JSONResponse({"detail": "Model not initialized"}, status_code=503)

    @router.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=ServerMetrics.CONTENT_TYPE)

    return router
