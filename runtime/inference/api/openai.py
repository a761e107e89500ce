"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models, and vLLM's LoRA load/unload."""

from __future__ import annotations

import json
import logging
import time
import uuid
import weakref
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from runtime.inference.backends.base import SamplingParams
from runtime.inference.errors import BadRequest
from runtime.inference.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    LoadLoraRequest,
    ModelCardOut,
    ModelList,
    UnloadLoraRequest,
)
from runtime.inference.serving import Job, Serving, cancel_on_disconnect

log = logging.getLogger(__name__)

MAX_STOP_STRINGS = 4


def _check_unsupported(body) -> None:
    if body.unknown_fields():
        log.info("ignoring unknown request fields: %s", ", ".join(body.unknown_fields()))
    if body.logprobs not in (None, False, 0):
        raise BadRequest("logprobs: not supported by this server", param="logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise BadRequest(f"{name}: only 0 is supported by this server", param=name)
    if len(body.stop_list()) > MAX_STOP_STRINGS:
        raise BadRequest(f"stop: at most {MAX_STOP_STRINGS} stop strings", param="stop")


def _params(body, max_tokens: int) -> SamplingParams:
    """The request's sampling with `max_tokens` as its budget; a `min_tokens` above it is a 400 (as vLLM's)."""
    if body.min_tokens > max_tokens:
        raise BadRequest(f"min_tokens={body.min_tokens} is more than max_tokens, or than what the context leaves "
                         f"after the prompt ({max_tokens})", param="min_tokens")
    top_k = body.top_k if body.top_k and body.top_k > 0 else 0
    return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=top_k,
                          seed=body.seed, min_tokens=body.min_tokens, ignore_eos=body.ignore_eos)


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def openai_router(serving: Serving) -> APIRouter:
    router = APIRouter(tags=["openai"])
    backend = serving.backend

    @router.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        now = int(time.time())
        return ModelList(data=[
            ModelCardOut(id=c.id, created=now, root=c.root or None, parent=c.parent,
                         max_model_len=backend.max_model_len)
            for c in backend.models()
        ])

    @router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_unsupported(body)
        model = backend.resolve_model(body.model)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        prompt_ids = await serving.encode_chat(messages)
        requested = body.max_completion_tokens or body.max_tokens
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        budget = serving.token_budget(len(prompt_ids), requested, "messages", param)
        jobs = [Job(prompt_ids, _params(body, budget), model, body.stop_list()) for _ in range(body.n)]
        rid, created, shown = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model or model
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return await _stream_response(serving, jobs, _chat_chunks(rid, created, shown, jobs, usage), "n")
        async with serving.admission.slot(len(jobs), "n"):
            results = await cancel_on_disconnect(request, serving.complete_many(jobs))
        completion = sum(r.completion_tokens for r in results)
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": shown,
            "choices": [{"index": i, "message": {"role": "assistant", "content": r.text},
                         "finish_reason": r.finish_reason, "logprobs": None} for i, r in enumerate(results)],
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": completion,
                      "total_tokens": len(prompt_ids) + completion},
        }

    @router.post("/v1/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request):
        _check_unsupported(body)
        model = backend.resolve_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise BadRequest("prompt: give at least one prompt", param="prompt")
        jobs, echoes, prompt_tokens = [], [], 0
        for i, prompt in enumerate(prompts):
            param = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
            ids = await serving.encode_prompt(prompt, param)
            prompt_tokens += len(ids)
            budget = serving.token_budget(len(ids), body.max_tokens, param, default=16)
            for _ in range(body.n):
                jobs.append(Job(ids, _params(body, budget), model, body.stop_list()))
                echoes.append(prompt if body.echo else "")
        rid, created, shown = f"cmpl-{uuid.uuid4().hex}", int(time.time()), body.model or model
        count_param = "prompt" if len(prompts) > 1 else "n"
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return await _stream_response(serving, jobs, _completion_chunks(rid, created, shown, jobs, echoes, usage),
                                          count_param)
        async with serving.admission.slot(len(jobs), count_param):
            results = await cancel_on_disconnect(request, serving.complete_many(jobs))
        completion = sum(r.completion_tokens for r in results)
        return {
            "id": rid, "object": "text_completion", "created": created, "model": shown,
            "choices": [{"index": i, "text": echoes[i] + r.text, "finish_reason": r.finish_reason, "logprobs": None}
                        for i, r in enumerate(results)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
        }

    return router


async def _stream_response(serving: Serving, jobs: list[Job], chunks, count_param: str) -> StreamingResponse:
    # Take the admission places now, so an overloaded server answers 429 before the stream starts. They are given
    # back when the stream ends, fails or is closed, or (if the client left before the body ever started, so the
    # generator never ran) when the generator is garbage-collected.
    ticket = serving.admission.acquire(len(jobs), count_param)

    async def body():
        try:
            async with aclosing(chunks(serving)) as pieces:
                async for piece in pieces:
                    yield piece
        except Exception as err:  # headers are sent: report in the stream, as OpenAI does
            log.exception("stream failed")
            yield _sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
        finally:
            ticket.release()

    stream = body()
    weakref.finalize(stream, ticket.release)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _chat_chunks(rid: str, created: int, model: str, jobs: list[Job], include_usage: bool):
    async def gen(serving: Serving):
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        extra = {"usage": None} if include_usage else {}
        for i in range(len(jobs)):
            yield _sse({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}], **extra})
        completion = 0
        async for i, delta in serving.stream_many(jobs):
            completion += len(delta.token_ids)
            if delta.text:
                yield _sse({**base, "choices": [{"index": i, "delta": {"content": delta.text}, "logprobs": None,
                                                 "finish_reason": None}], **extra})
            if delta.finish_reason:
                yield _sse({**base, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                                 "finish_reason": delta.finish_reason}], **extra})
        if include_usage:
            prompt = len(jobs[0].prompt_ids)
            yield _sse({**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                         "total_tokens": prompt + completion}})
        yield _sse("[DONE]")

    return gen


def _completion_chunks(rid: str, created: int, model: str, jobs: list[Job], echoes: list[str], include_usage: bool):
    async def gen(serving: Serving):
        base = {"id": rid, "object": "text_completion", "created": created, "model": model}
        extra = {"usage": None} if include_usage else {}
        for i, echo in enumerate(echoes):
            if echo:
                yield _sse({**base, "choices": [{"index": i, "text": echo, "logprobs": None, "finish_reason": None}],
                            **extra})
        completion = 0
        async for i, delta in serving.stream_many(jobs):
            completion += len(delta.token_ids)
            if delta.text or delta.finish_reason:
                yield _sse({**base, "choices": [{"index": i, "text": delta.text, "logprobs": None,
                                                 "finish_reason": delta.finish_reason}], **extra})
        if include_usage:
            prompt = sum(len(j.prompt_ids) for j in {id(j.prompt_ids): j for j in jobs}.values())
            yield _sse({**base, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                         "total_tokens": prompt + completion}})
        yield _sse("[DONE]")

    return gen


def adapters_router(serving: Serving) -> APIRouter:
    """vLLM's runtime LoRA endpoints (same request shapes and plain-text answers)."""
    router = APIRouter(tags=["adapters"])
    backend = serving.backend

    @router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
    async def load_lora_adapter(body: LoadLoraRequest) -> str:
        await backend.load_adapter(body.lora_name, body.lora_path)
        return f"Success: LoRA adapter '{body.lora_name}' added successfully."

    @router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
    async def unload_lora_adapter(body: UnloadLoraRequest) -> str:
        await backend.unload_adapter(body.lora_name)
        return f"Success: LoRA adapter '{body.lora_name}' removed successfully."

    return router
