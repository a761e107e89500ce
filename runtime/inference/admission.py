"""Bounded admission: at most `capacity` generation requests in the server; the next one gets 429 + Retry-After.

capacity = max_batch_size (running) + max_queued_requests (waiting). Counting happens at the HTTP layer, before any
work, so an overloaded server answers 429 at once instead of queueing without bound.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from runtime.inference.errors import Overloaded


class Admission:
    def __init__(self, max_running: int, max_queued: int, retry_after_s: int = 1, on_reject=None) -> None:
        self.capacity = max_running + max_queued
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self.in_system = 0
        self._on_reject = on_reject

    @asynccontextmanager
    async def slot(self, count: int = 1):
        """Hold `count` places (n choices use n) for the duration of a request, or raise Overloaded."""
        if self.in_system + count > self.capacity:
            if self._on_reject:
                self._on_reject()
            raise Overloaded(
                f"server busy: {self.in_system} requests in flight, at most {self.capacity} "
                f"(max_batch_size + max_queued_requests={self.max_queued}); retry later",
                retry_after_s=self.retry_after_s,
            )
        self.in_system += count
        try:
            yield
        finally:
            self.in_system -= count
