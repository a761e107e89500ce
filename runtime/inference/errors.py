"""The one place that turns exceptions into HTTP error responses.

OpenAI routes answer with OpenAI's envelope `{"error": {"message", "type", "param", "code"}}`; Kaito's `/chat`
keeps Kaito's own `{"detail": "..."}` bodies. FastAPI's 422 for a malformed body becomes a 400 naming the field
(`param`). `install_error_handlers(app)` works on any FastAPI app, ours or vLLM's.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status, OpenAI type and optional param/code."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


class BadRequest(APIError):
    """400: the request is wrong (a field, a too-long prompt...)."""


class KaitoBadRequest(APIError):
    """400 on Kaito's /chat: body `{"detail": message}` exactly as Kaito answers."""


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"


class ModelNotFound(APIError):
    status_code = 404
    error_type = "not_found_error"


class Overloaded(APIError):
    """429: the queue is full. Carries Retry-After."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message, code="rate_limit_exceeded", headers={"Retry-After": str(retry_after_s)})


class NotImplementedInBackend(APIError):
    """501: a feature this backend (or installation) does not have."""

    status_code = 501
    error_type = "not_implemented_error"


class ServiceUnavailable(APIError):
    """503: the model is not loaded yet, or the engine died (the process then exits). Carries Retry-After: another
    replica, or this one once loaded or restarted, can take the request."""

    status_code = 503
    error_type = "service_unavailable"

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 501: "not_implemented_error", 503: "service_unavailable"}


def error_body(message: str, error_type: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def openai_error(status: int, message: str, param: str | None = None, code: str | int | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    error_type = _STATUS_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, error_type, param, code), status_code=status, headers=headers)


def _validation_param(loc: tuple) -> str | None:
    # loc looks like ("body", "messages", 0, "content"); drop the "body"/"query" prefix, keep indices.
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header") else [str(p) for p in loc]
    name = ""
    for p in parts:
        name += f"[{p}]" if p.isdigit() else (f".{p}" if name else p)
    return name or None


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    if not isinstance(first, dict):  # raised by hand with plain messages (vLLM's JSON content-type check; found by
        return str(first), None      # the fuzz run: reading it as pydantic's dict was a 500)
    loc = tuple(first.get("loc", ()))
    param = _validation_param(loc)
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('msg')}", None
    msg = first.get("msg", "invalid value")
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app` (idempotent per app)."""

    @app.exception_handler(KaitoBadRequest)
    async def _kaito(_: Request, exc: KaitoBadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return openai_error(exc.status_code, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        if request.url.path == "/chat":  # Kaito's route keeps Kaito's body shape
            return JSONResponse({"detail": message}, status_code=400)
        return openai_error(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path in ("/chat", "/health", "/healthz", "/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return openai_error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return openai_error(500, f"internal error: {type(exc).__name__}: {exc}")
