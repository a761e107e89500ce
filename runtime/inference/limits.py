"""Limits checked before any work: the request body's size (413), and a prompt's length in characters before it is
tokenized (400 context_length_exceeded).

A tokenizer takes seconds and gigabytes for a prompt of megabytes (about 1 s and 150 MB of peak memory per MB of
English on this project's 2-core machines), all to find out that it is longer than the context. Both checks turn such
requests away at once, on every route of both backends (the body limit) and on every prompt we tokenize (the
characters).
"""

from __future__ import annotations

import json

from runtime.inference.errors import BadRequest, error_body
from runtime.inference.json_body import replay
from runtime.inference.settings import DEFAULT_MAX_BODY_BYTES


def longest_token_chars(tokenizer) -> int:
    """The most characters one token of `tokenizer` can stand for: its longest vocabulary entry (special tokens
    included). An entry is written byte by byte (byte-level BPE: 'Ġthe') or with its space marker (SentencePiece:
    '▁the'), so its length is at least the number of characters it covers. 0 when the vocabulary cannot be read
    (no pre-check then)."""
    try:
        return max(len(token) for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) if token)
    except (AttributeError, TypeError, ValueError):
        return 0


def check_prompt_chars(chars: int, max_model_len: int, max_token_chars: int, param: str) -> None:
    """Refuse a prompt of `chars` characters that cannot fit the context, without tokenizing it: every token covers at
    most `max_token_chars` characters, so such a prompt has more than `max_model_len` tokens. (It assumes what the
    causal LM tokenizers we serve do: normalizing does not shorten text.) A 400 like the one tokenizing would give."""
    if max_token_chars and chars > max_model_len * max_token_chars:
        raise BadRequest(
            f"{param}: the prompt is {chars} characters, more than this model's context (max_model_len) of "
            f"{max_model_len} tokens can hold (a token is at most {max_token_chars} characters here); shorten the "
            "prompt", param=param, code="context_length_exceeded",
        )


class BodyLimitMiddleware:
    """ASGI middleware for any app (ours or vLLM's): a request body over `max_bytes` gets 413 in our error envelope
    (Kaito's `{"detail": ...}` on /chat) as soon as it is known: from Content-Length before reading, else once the
    bytes read pass the limit. The body is then not read further; the server closes that connection."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, send, int(declared))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, send, None)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks
        receive_again = replay(body, receive)
        del body  # the app holds the body from now on, for as long as it needs it
        await self.app(scope, receive_again, send)

    async def _refuse(self, scope, send, size: int | None) -> None:
        told = f"{size} bytes" if size is not None else "more bytes"
        message = (f"request body: {told}, over this server's limit of {self.max_bytes} bytes "
                   "(max_request_body_bytes; KAITO_MAX_REQUEST_BODY_BYTES)")
        payload = {"detail": message} if scope.get("path") == "/chat" else error_body(
            message, "invalid_request_error", "body", "request_too_large")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
