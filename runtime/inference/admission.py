"""Bounded admission: at most `capacity` generation requests in the server; the next one gets 429 + Retry-After.

capacity = max_batch_size (running) + max_queued_requests (waiting). Counting happens at the HTTP layer, before any
work, so an overloaded server answers 429 at once instead of queueing without bound.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

from runtime.inference.errors import BadRequest, Overloaded, error_body


class Admission:
    def __init__(self, max_running: int, max_queued: int, retry_after_s: int = 1, on_reject=None) -> None:
        self.capacity = max_running + max_queued
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.in_system = 0
        self._on_reject = on_reject

    def acquire(self, count: int = 1, param: str | None = None) -> Ticket:
        """Take `count` places (n choices use n) or raise Overloaded; give them back with `ticket.release()`.

        More places than the server ever has is the request's fault, not the load's: a 400 naming `param`
        (retrying a 429 could never succeed)."""
        if count > self.capacity:
            raise BadRequest(f"{param or 'request'}: {count} sequences in one request, but this server runs at most "
                             f"{self.capacity} at once (max_batch_size + max_queued_requests); send fewer",
                             param=param)
        if self.in_system + count > self.capacity:
            if self._on_reject:
                self._on_reject()
            raise Overloaded(
                f"server busy: {self.in_system} requests in flight, at most {self.capacity} "
                f"(max_batch_size + max_queued_requests={self.max_queued}); retry later",
                retry_after_s=self.retry_after_s,
            )
        self.in_system += count
        return Ticket(self, count)

    @asynccontextmanager
    async def slot(self, count: int = 1, param: str | None = None):
        """Hold `count` places for the duration of the block, or raise Overloaded (BadRequest if it never fits)."""
        ticket = self.acquire(count, param)
        try:
            yield
        finally:
            ticket.release()


class Ticket:
    """Places held in an Admission; release() is idempotent (streams release from several paths)."""

    def __init__(self, admission: Admission, count: int) -> None:
        self._admission = admission
        self._count = count

    def release(self) -> None:
        if self._count:
            self._admission.in_system -= self._count
            self._count = 0


GENERATION_PATHS = frozenset({"/chat", "/v1/chat/completions", "/v1/completions"})


class AdmissionMiddleware:
    """The same bound for an app whose routes we do not own (vLLM's OpenAI app): each POST to `paths` holds one
    place for its whole response, streaming included; past capacity it answers 429 + Retry-After at once.

        app.add_middleware(AdmissionMiddleware, admission=Admission(max_num_seqs, max_queued))

    Our own app does not use it: its routes take places themselves (n choices hold n places).
    """

    def __init__(self, app, admission: Admission, paths: frozenset[str] = GENERATION_PATHS) -> None:
        self.app = app
        self.admission = admission
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        slot = self.admission.slot()
        try:
            await slot.__aenter__()
        except Overloaded as err:  # only the admission itself answers 429; the app's own errors pass through
            body = json.dumps(error_body(err.message, err.error_type, None, err.code)).encode()
            headers = [(b"content-type", b"application/json")]
            headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await slot.__aexit__(None, None, None)
