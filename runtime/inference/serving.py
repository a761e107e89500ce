"""The serving layer between the routers and a backend: context limits, stop strings, metrics, fan-out of `n`.

Backend-agnostic: it only uses the `Backend` protocol, so /chat and the OpenAI routes behave the same on any engine.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from fastapi import Request

from runtime.inference.admission import Admission
from runtime.inference.backends.base import Backend, Delta, GenerationRequest, SamplingParams
from runtime.inference.errors import APIError, BadRequest
from runtime.inference.limits import check_prompt_chars
from runtime.inference.memory import BIG_TEXT_CHARS, give_back_freed_memory
from runtime.inference.metrics import ServerMetrics


class ClientGone(APIError):
    """The client disconnected (nginx's 499); nobody reads this response."""

    status_code = 499


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]


@dataclass
class Job:
    """One generation to run: prompt tokens, sampling, stop strings."""

    prompt_ids: Sequence[int]
    params: SamplingParams
    model: str
    stop: Sequence[str] = ()


class Serving:
    def __init__(self, backend: Backend, metrics: ServerMetrics, admission: Admission, default_max_tokens: int):
        self.backend = backend
        self.metrics = metrics
        self.admission = admission
        self.default_max_tokens = default_max_tokens

    async def encode_prompt(self, text: str, param: str, truncated: bool = False) -> list[int]:
        """`text`'s tokens, tokenized in a worker thread (a big prompt takes seconds: the event loop, and with it
        /health and every other client, must not wait); refused first by its length in characters when it cannot
        fit the context, unless the caller keeps only its end (`truncated`, Kaito's handle_long_generation)."""
        if not truncated:
            check_prompt_chars(len(text), self.backend.max_model_len, self.backend.max_token_chars, param)
        return await _tokenize(self.backend.encode_prompt, text, chars=len(text))

    async def encode_chat(self, messages: list[dict], param: str = "messages") -> list[int]:
        """The chat template applied and tokenized in a worker thread, after the same check on the messages' text
        (their tokens alone must fit the context)."""
        chars = sum(len(m.get("content") or "") for m in messages)
        check_prompt_chars(chars, self.backend.max_model_len, self.backend.max_token_chars, param)
        return await _tokenize(self.backend.encode_chat, messages, chars=chars)

    async def decode(self, token_ids: Sequence[int], clean_up_tokenization_spaces: bool = False) -> str:
        return await asyncio.to_thread(self.backend.decode, token_ids, clean_up_tokenization_spaces)

    def token_budget(self, prompt_len: int, max_tokens: int | None, prompt_param: str,
                     max_tokens_param: str = "max_tokens", default: int | None = None) -> int:
        """max_tokens capped by the context; 400 naming the limit for a prompt that leaves no room, and for an
        empty one (vLLM's rule: the decoder prompt cannot be empty; a tokenizer that adds BOS makes "" one token,
        which is served)."""
        limit = self.backend.max_model_len
        if prompt_len == 0:
            raise BadRequest(f"{prompt_param}: the prompt is empty after tokenization; the decoder prompt cannot be "
                             "empty", param=prompt_param)
        if prompt_len >= limit:
            raise BadRequest(
                f"{prompt_param}: the prompt is {prompt_len} tokens but this model's context (max_model_len) is "
                f"{limit} tokens, including the generated ones; shorten the prompt",
                param=prompt_param, code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > limit:
            raise BadRequest(f"{max_tokens_param}={max_tokens} exceeds this model's context length (max_model_len) "
                             f"of {limit} tokens", param=max_tokens_param)
        wanted = max_tokens if max_tokens is not None else (default or self.default_max_tokens)
        return max(1, min(wanted, limit - prompt_len))

    async def stream(self, job: Job) -> AsyncIterator[Delta]:
        """Run one job: deltas with stop strings applied; records metrics; cancels the backend when closed early."""
        m, name = self.metrics, job.model
        request = GenerationRequest(job.prompt_ids, job.params, job.model, uuid.uuid4().hex)
        stops = [s for s in job.stop if s]
        hold = max((len(s) for s in stops), default=1) - 1
        pending = ""
        start = last = time.perf_counter()
        generated = 0
        finished = False
        try:
            async with aclosing(self.backend.stream(request)) as deltas:
                async for delta in deltas:
                    now = time.perf_counter()
                    if generated == 0 and delta.token_ids:
                        m.ttft.labels(name).observe(now - start)
                        m.prompt_tokens.labels(name).inc(len(job.prompt_ids))
                    elif delta.token_ids:
                        for _ in delta.token_ids:
                            m.itl.labels(name).observe((now - last) / len(delta.token_ids))
                    last = now
                    generated += len(delta.token_ids)
                    m.generation_tokens.labels(name).inc(len(delta.token_ids))
                    pending += delta.text
                    if stops and generated >= job.params.min_tokens:  # as vLLM: no stop before min_tokens
                        cut = _first_stop(pending, stops)
                        if cut is not None:
                            finished = True
                            self._finish(name, "stop", start)
                            yield Delta(delta.token_ids, pending[:cut], "stop")
                            return  # closing `deltas` cancels the rest of the generation
                    if delta.finish_reason is not None:
                        finished = True
                        self._finish(name, delta.finish_reason, start)
                        yield Delta(delta.token_ids, pending, delta.finish_reason)
                        return
                    emit = pending[: len(pending) - hold] if hold else pending
                    pending = pending[len(emit):]
                    yield Delta(delta.token_ids, emit, None)
        finally:
            if not finished:
                m.cancelled.labels(name).inc()

    def _finish(self, name: str, reason: str, start: float) -> None:
        self.metrics.e2e.labels(name).observe(time.perf_counter() - start)
        self.metrics.request_success.labels(name, reason).inc()

    async def complete(self, job: Job) -> Completion:
        parts: list[str] = []
        ids: list[int] = []
        reason = None
        async for delta in self.stream(job):
            parts.append(delta.text)
            ids.extend(delta.token_ids)
            reason = delta.finish_reason or reason
        return Completion("".join(parts), reason, len(job.prompt_ids), len(ids), ids)

    async def complete_many(self, jobs: list[Job]) -> list[Completion]:
        return list(await asyncio.gather(*(self.complete(j) for j in jobs)))

    async def stream_many(self, jobs: list[Job]) -> AsyncIterator[tuple[int, Delta]]:
        """Interleave the deltas of several jobs as (job index, delta); cancels all if the consumer stops."""
        if len(jobs) == 1:
            async for delta in self.stream(jobs[0]):
                yield 0, delta
            return
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump(i: int, job: Job) -> None:
            try:
                async for delta in self.stream(job):
                    await queue.put((i, delta))
            except Exception as err:  # surfaced to the consumer
                await queue.put((i, err))
            finally:
                await queue.put((i, done))

        tasks = [asyncio.create_task(pump(i, j)) for i, j in enumerate(jobs)]
        try:
            remaining = len(jobs)
            while remaining:
                i, item = await queue.get()
                if item is done:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield i, item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _tokenize(encode, what, chars: int) -> list[int]:
    """`encode(what)` in a worker thread; after a big text, the memory its tokenizer freed goes back to the OS
    (runtime/inference/memory.py says why it would not by itself)."""

    def run() -> list[int]:
        try:
            return encode(what)
        finally:
            if chars > BIG_TEXT_CHARS:
                give_back_freed_memory()

    return await asyncio.to_thread(run)


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


async def cancel_on_disconnect(request: Request, coro):
    """Await `coro`, cancelling it if the HTTP client goes away (non-streaming requests)."""
    task = asyncio.ensure_future(coro)

    async def watch() -> None:
        while not task.done():
            if await request.is_disconnected():
                task.cancel()
                return
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and not watcher.cancelled() and watcher.done():
            raise ClientGone("client closed the connection; generation cancelled") from None
        raise
    finally:
        watcher.cancel()
