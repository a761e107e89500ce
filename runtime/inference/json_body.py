"""Checks on a raw JSON request body, before any route or model reads it, on every route (ours and vLLM's):

- It is a JSON object. Every request of ours and of vLLM's is one, but some vLLM routes read `await request.json()`
  and call `.get` on it: a JSON string or list there was a 500 (found by the fuzz run, tests/inference/fuzz.py).
- Its text is valid Unicode. JSON can carry a lone UTF-16 surrogate (`"x\\ud800y"`): Python reads it into a `str`
  that no tokenizer can encode (the Rust tokenizer raises a TypeError).

Either gets a 400 naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from runtime.inference.errors import error_body

# Only a \uD800-\uDFFF escape can put a surrogate into a decoded body (raw UTF-8 cannot encode one), so bodies
# without one are not parsed twice.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(value: Any) -> tuple[str, int] | None:
    """(field path, character index) of the first string holding a lone surrogate, keys included; else None.
    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                return path, err.start
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(item)]))
        elif isinstance(item, dict):
            for key, v in reversed(list(item.items())):
                key_text = str(key).encode("utf-8", "backslashreplace").decode()  # a bad key is shown escaped
                sub = f"{path}.{key_text}" if path else key_text
                stack += [(sub, v), (sub, key)]
    return None


def find_in_body(body: bytes) -> str | None:
    """The path of the first field of a JSON body holding a lone surrogate ("body" for the body itself)."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON (or nested too deep to read): the route's own validation answers
    found = lone_surrogate(data)
    return None if found is None else (found[0] or "body")


def replay(body: bytes, receive):
    """An ASGI `receive` for the app after a middleware read the whole body: the body once, as one message, then
    the client's own messages (its disconnect). The body is handed over, not kept: the app alone decides how long
    it lives."""
    held = [body]

    async def receive_again():
        if held:
            return {"type": "http.request", "body": held.pop(), "more_body": False}
        return await receive()

    return receive_again


def body_problem(body: bytes) -> tuple[str, str] | None:
    """(field, what is wrong) for a JSON body that is not an object or holds a lone surrogate; None if neither.
    A body that is empty or starts like an object is left to the route's own validation (missing or bad JSON)."""
    start = body.lstrip()[:1]
    if start not in (b"", b"{"):
        return "body", "the request body must be a JSON object ({...})"
    path = find_in_body(body)
    if path is not None:
        return path, f"{path}: not valid Unicode text (it holds a lone UTF-16 surrogate escape such as \\ud800)"
    return None


class JsonBodyCheckMiddleware:
    """ASGI middleware for any app (ours or vLLM's): a JSON POST body that is not an object or holds a lone
    surrogate gets a 400 naming the field (Kaito's `{"detail": ...}` on /chat, the OpenAI envelope elsewhere)
    before any route reads it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"") if scope["type"] == "http" else b""
        if scope.get("method") != "POST" or not content_type.startswith(b"application/json"):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = body_problem(body)
        if problem is not None:
            path, message = problem
            if scope.get("path") == "/chat":
                payload = {"detail": message}
            else:
                payload = error_body(message, "invalid_request_error", path)
            response = json.dumps(payload).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": response})
            return
        receive_again = replay(body, receive)
        del body  # the app holds the body from now on, for as long as it needs it
        await self.app(scope, receive_again, send)
