"""The preset type: a typed, immutable declaration of one model.

Presets are plain data. This module imports only the standard library, so `import presets` stays cheap
and never touches torch, transformers or a GPU. Everything derived (KV-cache bytes per token, GPU plans)
is computed from these numbers by pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Runtime = Literal["transformers", "vllm"]
TuningMethod = Literal["lora", "qlora"]
AttentionType = Literal["mha", "gqa", "mqa", "mla"]

GIB = 1024**3

# Bytes per parameter of the dtypes weights are stored and served in.
DTYPE_BYTES: Mapping[str, float] = MappingProxyType(
    {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1, "mxfp4": 0.53, "nf4": 0.5}
)

# The seven projections of Llama-style blocks: the usual LoRA targets.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Phi3ForCausalLM fuses q/k/v into qkv_proj and gate/up into gate_up_proj.
PHI3_TARGET_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
FALCON_TARGET_MODULES = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")

# Preset names become image names: lower-case letters, digits, '-' and '.'.
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Architecture:
    """The numbers of a model's `config.json` that sizing needs."""

    layers: int
    """num_hidden_layers."""
    hidden_size: int
    attention_heads: int
    """num_attention_heads."""
    kv_heads: int
    """num_key_value_heads (1 for multi-query attention, == attention_heads for MHA)."""
    vocab_size: int
    head_dim: int = 0
    """Per-head dimension; 0 means hidden_size // attention_heads."""
    intermediate_size: int = 0
    attention: AttentionType = "gqa"
    kv_lora_rank: int = 0
    """MLA only (DeepSeek V3/R1): compressed KV rank."""
    qk_rope_head_dim: int = 0
    """MLA only: rotary part of the key head."""

    @property
    def effective_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.attention_heads

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV-cache bytes for one token across all layers (Kaito's `calculateKVCacheTokenSize`)."""
        if self.attention == "mla":
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.layers * dtype_bytes
        return 2 * self.kv_heads * self.effective_head_dim * self.layers * dtype_bytes


@dataclass(frozen=True)
class TuningSupport:
    """Which fine-tuning methods a preset supports, and their defaults."""

    methods: tuple[TuningMethod, ...] = ("qlora", "lora")
    target_modules: tuple[str, ...] = LLAMA_PROJECTIONS
    """Default LoRA target modules (Kaito's DEFAULT_TARGET_MODULES)."""


@dataclass(frozen=True)
class KaitoFigures:
    """Numbers Kaito publishes for this preset (kaito-reference.md §1.3), kept to compare our plans with.

    None means Kaito publishes no figure. GiB throughout.
    """

    gpu_count: int | None = None
    total_gpu_memory_gib: float | None = None
    per_gpu_memory_gib: float | None = None
    disk_gib: float | None = None
    tuning_total_gpu_memory_gib: float | None = None
    tuning_per_gpu_memory_gib: float | None = None
    safetensors_gib: float | None = None
    bytes_per_token: int | None = None
    token_limit: int | None = None
    image_tag: str | None = None


@dataclass(frozen=True)
class Preset:
    """One servable (and maybe tunable) model. Register it with `presets.register`."""

    name: str
    """Preset id, as in a Workspace's `inference.preset.name` (lower-case, DNS-1123)."""
    family: str
    hf_repo: str
    """Hugging Face repo id; for local presets, the repo the weights came from."""
    revision: str
    """Pinned commit of `hf_repo` (40 hex digits), or `local` for presets built on this machine."""
    architecture: Architecture
    parameters_b: float
    """Parameter count in billions."""
    weight_dtype: str
    """Dtype of the released weights (a key of DTYPE_BYTES)."""
    weights_gib: float
    """Size of the safetensors files on disk, GiB."""
    context_length: int
    """max_position_embeddings: the longest context the model supports."""
    license: str
    redistributable: bool
    """Whether weights may be baked into a public image (False for gated models)."""
    gated: bool = False
    """Whether downloading needs an HF token (Kaito's downloadAuthRequired)."""
    chat_template: str | None = None
    """File under presets/chat_templates/, or None to use the tokenizer's own template."""
    tool_call_parser: str | None = None
    """vLLM --tool-call-parser name (enables auto tool choice)."""
    reasoning_parser: str | None = None
    """vLLM --reasoning-parser name."""
    runtimes: tuple[Runtime, ...] = ("vllm", "transformers")
    """Supported runtimes, preferred first."""
    transformers_params: Mapping[str, object] = field(default_factory=dict)
    """Extra model-loading arguments for the transformers backend (e.g. torch_dtype)."""
    vllm_params: Mapping[str, object] = field(default_factory=dict)
    """Extra vLLM engine flags (kebab-case keys, as on the command line)."""
    tensor_parallel: bool = True
    """False where the head count does not split over GPUs (falcon-7b: 71 heads)."""
    distributed: bool = False
    """Whether multi-node (pipeline-parallel, Ray) inference is supported."""
    lora_serving: bool = True
    """Whether LoRA adapters may be served on this preset (Kaito's DisallowLoRA, inverted)."""
    tuning: TuningSupport | None = None
    """None: the preset cannot be fine-tuned."""
    trust_remote_code: bool = False
    image_tag: str = "0.2.0"
    """Tag of the preset image kaito-<name>:<tag>."""
    readiness_timeout_s: int = 1800
    local_builder: str | None = None
    """For presets whose weights are made on this machine: the builder's name in runtime.models."""
    kaito: KaitoFigures | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each number came from: field name -> source."""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "transformers_params", _frozen(self.transformers_params))
        object.__setattr__(self, "vllm_params", _frozen(self.vllm_params))
        object.__setattr__(self, "sources", _frozen(self.sources))

    @property
    def kv_cache_bytes_per_token(self) -> int:
        """KV-cache bytes per token at 16-bit KV (the derived figure Kaito calls BytesPerToken)."""
        return self.architecture.kv_cache_bytes_per_token(2)

    @property
    def image_name(self) -> str:
        """Image repository name without registry: kaito-<preset>."""
        return f"kaito-{self.name}"

    @property
    def is_local(self) -> bool:
        return self.local_builder is not None

    def supports_tuning(self, method: TuningMethod | None = None) -> bool:
        if self.tuning is None:
            return False
        return method is None or method in self.tuning.methods
