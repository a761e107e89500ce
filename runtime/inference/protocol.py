"""Our pydantic request and response models: the OpenAI subset we serve and Kaito's /chat body.

Unknown OpenAI fields are accepted and logged (clients send many optional ones); fields whose meaning we cannot
honour with a non-default value (logprobs, penalties...) are rejected with a 400 naming the field. Numbers are
finite (NaN and Infinity, which Python's JSON reader accepts, are refused) and integers that reach the engine stay
within what it can hold (a seed fits in 64 bits). Text is checked for valid Unicode before these models see it
(api/checks.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SEED_MAX = 2**63 - 1
"""The largest seed a torch generator (and vLLM) takes."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


# --- OpenAI ---


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class _SamplingFields(_Lenient):
    model: str | None = Field(None, description="Served model name: the base, an adapter, or combined_adapter.")
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (capped by the context).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, description="vLLM extension; -1/0/None = off.")
    n: int = Field(1, ge=1, le=16, description="Choices per prompt (run as n requests).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end the text (not included).")
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Reproducible sampling for this request.")
    min_tokens: int = Field(0, ge=0, description="vLLM extension: no end of sequence before this many tokens.")
    ignore_eos: bool = Field(False, description="vLLM extension: go on after the end of sequence, to max_tokens.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: Any = None
    user: str | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        return [s for s in stops if s]


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")


class CompletionRequest(_SamplingFields):
    prompt: str | list[str] = Field(..., description="A prompt or a list of prompts.")
    echo: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCardOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kaito"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCardOut]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class LoadLoraRequest(BaseModel):
    lora_name: str = Field(..., min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    lora_path: str = Field(..., min_length=1, max_length=4096, description="Adapter folder, or oci://registry/repo:tag.")


class UnloadLoraRequest(BaseModel):
    lora_name: str = Field(..., min_length=1)


# --- Kaito /chat (kaito-reference.md §2.1) ---


class GenerateKwargs(BaseModel):
    """Kaito's defaults; extra keys are accepted like Kaito's (and rejected if the engine cannot honour them)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    max_length: int = Field(200, ge=1, description="Prompt plus generated tokens, as in transformers.")
    min_length: int = Field(0, ge=0)
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_k: int = Field(10, ge=0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    typical_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    max_new_tokens: int | None = Field(None, ge=1, description="If set, wins over max_length (transformers' rule).")
    min_new_tokens: int = Field(0, ge=0, description="No end of sequence before this many new tokens.")
    seed: int | None = Field(None, ge=0, le=SEED_MAX)


class KaitoMessage(BaseModel):
    role: str
    content: str


class UnifiedRequestModel(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    prompt: str | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str | None = None
    handle_long_generation: Literal["hole"] | None = None
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)
    messages: list[KaitoMessage] | None = None


class KaitoResult(BaseModel):
    Result: str
