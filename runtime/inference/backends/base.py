"""The backend protocol: what the HTTP layer needs from an engine (transformers here, vLLM elsewhere).

The routers, error handlers, auth, admission (429) and metrics only talk to this protocol, so another engine
plugs in by implementing it (see docs/inference.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature 0 means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k filtering."""
    seed: int | None = None
    min_tokens: int = 0
    """No end of sequence before this many new tokens (vLLM's min_tokens; Kaito's min_new_tokens)."""
    ignore_eos: bool = False
    """Generate max_tokens whatever the model says (vLLM's extension: benchmarks force output lengths with it)."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: Sequence[int]
    params: SamplingParams
    model: str
    """A served model name, already checked with `Backend.resolve_model`."""
    request_id: str = ""


@dataclass
class Delta:
    """New output of one request: tokens since the previous delta and their text."""

    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class ModelCard:
    id: str
    parent: str | None = None
    """The base model's served name for adapters (OpenAI `parent`), None for the base itself."""
    root: str = ""
    """Weights location (path or repo)."""


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An engine serving one base model and its adapters."""

    base_name: str
    default_model: str
    """What /chat and requests without `model` use (the combined adapter when adapters exist, as Kaito)."""
    max_model_len: int
    max_token_chars: int
    """The most characters one token stands for (runtime.inference.limits.longest_token_chars); 0 = unknown."""

    def ready(self) -> bool:
        """True once the model is loaded and the engine accepts requests."""

    def failure(self) -> str | None:
        """Why the engine stopped for good, once it has (the server then exits so the pod restarts); None while it
        loads or serves."""

    def models(self) -> list[ModelCard]: ...

    def resolve_model(self, name: str | None) -> str:
        """The served name to use for `name` (None = default); raise errors.ModelNotFound if unknown."""

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Apply the chat template (with the assistant generation prompt) and tokenize."""

    def decode(self, token_ids: Sequence[int], clean_up_tokenization_spaces: bool = False) -> str: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Generate; closing the iterator early (client gone, stop string) cancels the generation."""

    def stats(self) -> EngineStats:
        """Running and waiting requests, for our gauges; not needed by an engine that exports its own (vLLM)."""

    async def load_adapter(self, name: str, path: str) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...

    def close(self) -> None: ...
