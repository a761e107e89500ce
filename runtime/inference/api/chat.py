"""Kaito's `POST /chat` (kaito-reference.md §2.1): `prompt` or `messages`, `generate_kwargs` with Kaito's defaults,
answer `{"Result": "..."}`, Kaito's 400 `{"detail": ...}` messages.

Differences from Kaito, on purpose: for `messages` the answer is the assistant's text (Kaito returned a Python repr
of a dict); generation runs on the shared continuous-batching engine, so `generate_kwargs` it cannot honour
(beam search, typical_p, repetition_penalty) get a 400 naming the key instead of being silently ignored.
`min_length` (prompt included) and `min_new_tokens` hold back the end of sequence, as transformers' processors do.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from runtime.inference.backends.base import SamplingParams
from runtime.inference.errors import BadRequest, KaitoBadRequest
from runtime.inference.protocol import GenerateKwargs, KaitoResult, UnifiedRequestModel
from runtime.inference.serving import Job, Serving, cancel_on_disconnect

PROMPT_REQUIRED = "Text generation parameter prompt required"
MESSAGES_REQUIRED = "Conversational parameter messages required"

# Keys Kaito fills from the tokenizer; the engine knows them already.
_IGNORED_KWARGS = {"pad_token_id", "eos_token_id", "early_stopping"}
# Non-default values the engine cannot honour: key -> Kaito's default.
_UNSUPPORTED = {"num_beams": 1, "typical_p": 1.0, "repetition_penalty": 1.0}


def _check_kwargs(kw: GenerateKwargs) -> None:
    for key, default in _UNSUPPORTED.items():
        if getattr(kw, key) != default:
            raise KaitoBadRequest(f"generate_kwargs.{key}={getattr(kw, key)!r} is not supported by the "
                                  f"continuous-batching engine (only {default!r})")
    for key in sorted(kw.model_extra or {}):
        if key not in _IGNORED_KWARGS:
            raise KaitoBadRequest(f"generate_kwargs.{key} is not supported by this server")


def chat_router(serving: Serving, pipeline: str = "text-generation") -> APIRouter:
    """Kaito's /chat on any backend. `pipeline` is Kaito's --pipeline: which field a request must carry."""
    router = APIRouter(tags=["kaito"])
    backend = serving.backend

    @router.post("/chat", response_model=KaitoResult)
    async def chat(body: UnifiedRequestModel, request: Request) -> KaitoResult:
        use_messages = bool(body.messages) and (pipeline == "conversational" or not body.prompt)
        if pipeline == "conversational" and not body.messages:
            raise KaitoBadRequest(MESSAGES_REQUIRED)
        if not use_messages and not body.prompt:
            raise KaitoBadRequest(PROMPT_REQUIRED)
        kw = body.generate_kwargs
        _check_kwargs(kw)
        hole = body.handle_long_generation == "hole"
        try:
            if use_messages:
                prompt_text = ""
                ids = await serving.encode_chat([m.model_dump() for m in body.messages])
            else:
                prompt_text = (body.prefix or "") + body.prompt
                ids = await serving.encode_prompt(prompt_text, "prompt", truncated=hole)
        except BadRequest as err:
            raise KaitoBadRequest(err.message) from None
        if kw.max_new_tokens is not None:
            new = kw.max_new_tokens
        else:
            new = kw.max_length - len(ids)
            if new <= 0:
                raise KaitoBadRequest(f"generate_kwargs.max_length={kw.max_length} counts the prompt too, which is "
                                      f"{len(ids)} tokens: raise max_length or set max_new_tokens")
        if hole and len(ids) + new > backend.max_model_len:
            keep = backend.max_model_len - min(new, backend.max_model_len - 1)
            ids = ids[-keep:]
        try:
            budget = serving.token_budget(len(ids), new, "messages" if use_messages else "prompt",
                                          "generate_kwargs.max_new_tokens" if kw.max_new_tokens else
                                          "generate_kwargs.max_length")
        except BadRequest as err:
            raise KaitoBadRequest(err.message) from None
        minimum = max(kw.min_new_tokens, kw.min_length - len(ids))
        if minimum > budget:
            raise KaitoBadRequest(f"generate_kwargs.min_new_tokens (or min_length): {minimum} new tokens is more than "
                                  f"max_new_tokens, or than what the context leaves after the prompt ({budget})")
        temperature = kw.temperature if kw.do_sample else 0.0
        params = SamplingParams(max_tokens=budget, temperature=temperature, top_p=kw.top_p, top_k=kw.top_k,
                                seed=kw.seed, min_tokens=minimum)
        job = Job(ids, params, backend.default_model)
        async with serving.admission.slot():
            result = await cancel_on_disconnect(request, serving.complete(job))
        text = await serving.decode(result.token_ids, clean_up_tokenization_spaces=body.clean_up_tokenization_spaces)
        if body.return_full_text and not use_messages:
            text = prompt_text + text
        return KaitoResult(Result=text)

    return router
