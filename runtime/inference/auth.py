"""HTTP middlewares shared by every app (ours or vLLM's): the optional API key and JSON bodies from plain curl.

API key: `Authorization: Bearer <key>` on every path except health and metrics (probes and scrapers carry no key).
"""

from __future__ import annotations

import hmac
import json

from runtime.inference.errors import error_body
from runtime.kaito import HEALTH_PATH, LIVE_PATH, READY_PATH

OPEN_PATHS = frozenset({HEALTH_PATH, "/healthz", LIVE_PATH, READY_PATH, "/metrics"})


class ApiKeyMiddleware:
    """ASGI middleware: `app.add_middleware(ApiKeyMiddleware, api_key=...)`; no key = no check."""

    def __init__(self, app, api_key: str | None = None) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if (self.expected is None or scope["type"] != "http" or scope.get("path") in OPEN_PATHS
                or scope.get("method") == "OPTIONS"):
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        body = json.dumps(error_body("missing or wrong API key: send `Authorization: Bearer <key>`",
                                     "authentication_error", None, "invalid_api_key")).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


class JsonBodyMiddleware:
    """Read form-typed POST bodies as JSON: Kaito's documented call is `curl -d '{...}'`, which sends
    application/x-www-form-urlencoded."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST":
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            given = dict(scope.get("headers") or []).get(b"content-type", b"")
            # only what `curl -d` sends (or nothing): multipart uploads and other types pass untouched
            if given == b"" or given.startswith(b"application/x-www-form-urlencoded"):
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        return await self.app(scope, receive, send)
