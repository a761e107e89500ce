"""GPU memory plans: will this preset serve (or tune) on this instance type, and how is the memory spent?

Pure arithmetic on preset numbers and the instance catalogue; no torch. The inference estimate starts from
Kaito's HEAD node estimator (kaito-reference.md §1.4, `pkg/workspace/estimator/nodesestimator`):

    weights = safetensors GiB x 1.02;  usable per GPU = GPU GiB x 0.84
    reserve = 2.3 GiB (1.7 activations + 0.6 non-torch) + max_model_len x bytes/token / GPUs
    fits when weights / GPUs <= (usable - reserve) / 1.05

rewritten as "required per GPU <= available per GPU" so that each term shows up in a breakdown. Deliberate
differences from Kaito (each has a test in tests/sizing/test_kaito_comparison.py; docs/sizing.md lists them):

1. KV cache is split over min(tensor-parallel size, KV heads) GPUs, not over all GPUs: vLLM replicates KV
   heads when the TP size exceeds their number (falcon-7b has 1, Llama-3 8).
2. The tensor-parallel size must divide the attention heads (and the KV heads, or be a multiple of them), as
   vLLM requires; Kaito always uses every GPU of the node, which vLLM refuses for e.g. phi-3-medium on 4 GPUs.
3. On A10 GPUs the usable fraction is 0.82, the gpu-memory-utilization Kaito passes to vLLM there (its
   estimator uses 0.84 everywhere).
4. LoRA adapters (vLLM --max-loras) get their own term: rank-16 (vLLM's default max rank) weights for the
   preset's target modules.
5. Weights stored in 16-bit but served in float32 (our CPU-oriented local presets) count double.
6. The default max_model_len is the longest context that fits (capped at the model's limit), not 2048;
   the layout (node count) is chosen at Kaito's 2048 first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from presets._schema import DTYPE_BYTES, GIB, LLAMA_PROJECTIONS, Architecture, Preset
from runtime.sizing.catalog import InstanceType, UnknownInstanceType, get_instance_type, instance_types

# Kaito HEAD estimator constants (model-sku-calculation.md; vLLM 0.10.1 measurements).
WEIGHT_FILE_OVERHEAD = 1.02
"""Loaded weights are ~2% larger than the safetensors files (padding, buffers)."""
WEIGHT_MARGIN = 1.05
"""Kaito divides the per-GPU room by 1.05: a 5% margin on weights (fragmentation)."""
GPU_MEMORY_UTILIZATION = 0.84
A10_GPU_MEMORY_UTILIZATION = 0.82
ACTIVATIONS_GIB = 1.7
"""Peak activation memory of vLLM's profiling run, per GPU."""
RUNTIME_OVERHEAD_GIB = 0.6
"""CUDA context, NCCL and other memory outside torch's allocator, per GPU."""
KAITO_DEFAULT_MAX_MODEL_LEN = 2048
"""What Kaito's estimator assumes when the user sets no max-model-len; we size the layout at this length."""
VLLM_MAX_LORA_RANK = 16
"""vLLM's default --max-lora-rank: the LoRA slot size it preallocates per adapter."""
MAX_MODEL_LEN_STEP = 256
"""A default max_model_len is rounded down to a multiple of this (vLLM blocks are 16 tokens)."""

# Tuning (Kaito's qlora/lora ConfigMap defaults: r=8, bf16, batch 1; QLoRA = NF4 + double quant).
TUNING_LORA_RANK = 8
NF4_BITS_PER_PARAM = 4.127
"""4-bit NF4 plus double-quantised block constants (QLoRA paper: 0.127 bits per parameter)."""
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34
"""Activation bytes per token per hidden unit of one transformer layer in 16-bit, attention scores left out
(SDPA/flash attention): Korthikanti et al. 2022, 'Reducing activation recomputation', eq. 1."""
LOGITS_BYTES_PER_ELEMENT = 10
"""bf16 logits (2) + their float32 upcast for the loss (4) + its gradient (4)."""
TUNING_CUDA_OVERHEAD_GIB = 1.0
TUNING_FRAGMENTATION = 0.05
TUNING_USABLE_FRACTION = 0.95
"""Training uses the whole GPU except what the driver keeps; there is no vLLM-style reservation."""


class PlanError(Exception):
    """The request cannot be planned (bad input, or an unsupported combination)."""


class DoesNotFit(PlanError):
    """The preset does not fit: how many GiB per GPU are missing, and the smallest instance type that fits."""

    def __init__(self, reason: str, shortfall_gib: float, suggestion: str | None):
        self.reason = reason
        self.shortfall_gib = round(shortfall_gib, 2)
        self.suggestion = suggestion
        fix = (f"smallest instance type that fits: {suggestion}" if suggestion
               else "no catalogued instance type fits")
        super().__init__(f"{reason}; short by {self.shortfall_gib:.2f} GiB per GPU; {fix}")


# ---------------------------------------------------------------------------------------------------------------
# Shared arithmetic


def serving_dtype(preset: Preset, instance_type: InstanceType, runtime: str = "vllm") -> str:
    """The dtype the model runs in: the preset's own where it pins one (float32 for our CPU-sized local
    presets), else float16 below compute capability 8.0 (no bfloat16 there), else bfloat16."""
    pinned = preset.vllm_params.get("dtype") if runtime == "vllm" else preset.transformers_params.get("torch_dtype")
    if pinned in ("float32", "float16", "bfloat16"):
        return str(pinned)
    return "float16" if instance_type.compute_capability < 8.0 else "bfloat16"


def _weight_scale(preset: Preset, dtype: str) -> float:
    """Loaded size / file size: only float weights change size when cast (bf16 file served in fp32 = x2)."""
    floats = ("float32", "bfloat16", "float16")
    if preset.weight_dtype in floats and dtype in floats:
        return DTYPE_BYTES[dtype] / DTYPE_BYTES[preset.weight_dtype]
    return 1.0


def _module_shape(arch: Architecture, module: str) -> tuple[int, int]:
    """(in_features, out_features) of a LoRA target module, from the architecture numbers."""
    h, hd = arch.hidden_size, arch.effective_head_dim
    q, kv = arch.attention_heads * hd, arch.kv_heads * hd
    inter = arch.intermediate_size or 4 * h
    shapes = {
        "q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
        "qkv_proj": (h, q + 2 * kv), "query_key_value": (h, q + 2 * kv), "dense": (q, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h), "gate_up_proj": (h, 2 * inter),
        "dense_h_to_4h": (h, inter), "dense_4h_to_h": (inter, h),
    }
    return shapes.get(module, (h, h))


def lora_parameters(preset: Preset, rank: int, target_modules: tuple[str, ...] | None = None) -> int:
    """Trainable parameters of a rank-`rank` LoRA on the target modules of every layer: r x (in + out) each."""
    modules = target_modules or (preset.tuning.target_modules if preset.tuning else LLAMA_PROJECTIONS)
    per_layer = sum(rank * sum(_module_shape(preset.architecture, m)) for m in modules)
    return per_layer * preset.architecture.layers


def _valid_tensor_parallel(arch: Architecture, size: int) -> bool:
    """vLLM shards attention heads evenly and KV heads evenly or by replication."""
    if arch.attention_heads % size:
        return False
    return arch.attention == "mla" or arch.kv_heads % size == 0 or size % arch.kv_heads == 0


def _usable_fraction(instance_type: InstanceType) -> float:
    """Kaito passes 0.82 on "NVIDIA A10" (not A10G), 0.84 elsewhere; GFD spells the product NVIDIA-A10."""
    is_a10 = re.fullmatch(r"nvidia[ -]a10", instance_type.gpu_model.strip().lower()) is not None
    return A10_GPU_MEMORY_UTILIZATION if is_a10 else GPU_MEMORY_UTILIZATION


def _resolve(preset: Preset, instance_type: InstanceType | str) -> InstanceType:
    """Check the preset; accept an instance type or its catalogue name; refuse non-NVIDIA accelerators."""
    if not isinstance(preset, Preset):
        raise PlanError(f"preset must be a Preset, got {type(preset).__name__}")
    if isinstance(instance_type, str):
        try:
            instance_type = get_instance_type(instance_type)
        except UnknownInstanceType as err:
            raise PlanError(str(err)) from None
    if not isinstance(instance_type, InstanceType):
        raise PlanError(f"instance_type must be an InstanceType or a catalogued name, got "
                        f"{type(instance_type).__name__}")
    if instance_type.vendor != "nvidia":
        raise PlanError(f"instance type {instance_type.name} has {instance_type.gpu_model} accelerators; "
                        "our images need NVIDIA CUDA GPUs")
    return instance_type


def _adapter_slots(adapters) -> tuple[int, int]:
    """(how many adapters, LoRA slot rank): an int, or a sequence of adapters (objects with `.rank` are used to
    raise the slot rank above vLLM's default 16, as --max-lora-rank must be)."""
    if isinstance(adapters, bool) or not isinstance(adapters, int | list | tuple):
        raise PlanError(f"adapters must be a number >= 0 or a list of adapters, got {adapters!r}")
    if isinstance(adapters, int):
        if adapters < 0:
            raise PlanError(f"adapters must be >= 0, got {adapters!r}")
        return adapters, VLLM_MAX_LORA_RANK
    ranks = [int(getattr(a, "rank", 0) or 0) for a in adapters]
    return len(adapters), max([VLLM_MAX_LORA_RANK, *ranks])


def _suggestion_candidates(instance_type: InstanceType) -> list[InstanceType]:
    """Non-deprecated NVIDIA types, smallest first; the asked type's provider before the others."""
    usable = [it for it in instance_types() if it.vendor == "nvidia" and not it.deprecated]
    same = instance_type.provider if instance_type.provider != "byo" else "azure"
    return sorted(usable, key=lambda it: (it.provider != same, it.total_gpu_memory_gib, it.gpu_count, it.name))


# ---------------------------------------------------------------------------------------------------------------
# Inference


@dataclass(frozen=True)
class InferencePlan:
    """How a preset is served on `nodes` x `instance_type`, with its per-GPU memory breakdown (GiB)."""

    preset: str
    instance_type: str
    runtime: str
    nodes: int
    gpus_per_node: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int
    dtype: str
    breakdown: dict[str, float]
    """GiB per GPU: weights, kv_cache (one sequence at max_model_len), activations, runtime_overhead,
    adapters."""
    required_gib_per_gpu: float
    available_gib_per_gpu: float
    data_parallel_size: int = 1
    """>1 when a small model is replicated over the node's GPUs instead of sharded (Kaito HEAD's rule)."""
    kv_cache_bytes_per_token: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def headroom_gib_per_gpu(self) -> float:
        return round(self.available_gib_per_gpu - self.required_gib_per_gpu, 2)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["headroom_gib_per_gpu"] = self.headroom_gib_per_gpu
        return data


@dataclass(frozen=True)
class _Layout:
    nodes: int
    gpus_per_node: int
    tp: int
    pp: int
    dp: int


def _inference_breakdown(preset: Preset, it: InstanceType, layout: _Layout, max_model_len: int, dtype: str,
                         slots: tuple[int, int]) -> dict[str, float]:
    """Per-GPU GiB; `slots` = (LoRA adapters served at once, their slot rank)."""
    arch = preset.architecture
    shards = layout.tp * layout.pp
    weights = preset.weights_gib * _weight_scale(preset, dtype) * WEIGHT_FILE_OVERHEAD * WEIGHT_MARGIN / shards
    kv_bytes = arch.kv_cache_bytes_per_token(4 if dtype == "float32" else 2)
    kv_shards = 1 if arch.attention == "mla" else min(layout.tp, arch.kv_heads)
    kv_cache = max_model_len * kv_bytes / (kv_shards * layout.pp) / GIB
    adapter = slots[0] * lora_parameters(preset, slots[1]) * DTYPE_BYTES.get(dtype, 2) / shards / GIB
    return {
        "weights": round(weights, 3),
        "kv_cache": round(kv_cache, 3),
        "activations": ACTIVATIONS_GIB,
        "runtime_overhead": RUNTIME_OVERHEAD_GIB,
        "adapters": round(adapter, 3),
    }


def _layouts(preset: Preset, it: InstanceType, count: int, runtime: str, dtype: str) -> list[_Layout]:
    """Candidate layouts, fewest nodes first."""
    gpus = it.gpu_count
    if runtime == "transformers":
        # accelerate's device_map="auto" splits the layers over the node's GPUs: a naive pipeline, one node.
        return [_Layout(nodes=1, gpus_per_node=gpus, tp=1, pp=gpus, dp=1)]
    if not preset.tensor_parallel:
        tp = 1
    else:
        tp = max(t for t in range(1, gpus + 1) if _valid_tensor_parallel(preset.architecture, t))
    single_gpu_weights = preset.weights_gib * _weight_scale(preset, dtype) * WEIGHT_FILE_OVERHEAD
    if gpus > 1 and single_gpu_weights < 0.5 * it.gpu_memory_gib:
        # Kaito HEAD's configureParallelism: a model under half a GPU is replicated (data parallel).
        layouts = [_Layout(nodes=1, gpus_per_node=gpus, tp=1, pp=1, dp=gpus)]
    else:
        layouts = [_Layout(nodes=1, gpus_per_node=tp, tp=tp, pp=1, dp=1)]
    if preset.distributed:
        # Multi-node: vLLM over Ray, pipeline-parallel across nodes (Kaito's pipeline-parallel-size=#nodes).
        layouts += [_Layout(nodes=n, gpus_per_node=tp, tp=tp, pp=n, dp=1) for n in range(2, count + 1)]
    return layouts


def _required(breakdown: dict[str, float]) -> float:
    return round(sum(breakdown.values()), 3)


def _max_fitting_len(preset, it, layout, dtype, slots, available, cap) -> int:
    """Longest max_model_len (multiple of MAX_MODEL_LEN_STEP, at most `cap`) that fits `layout`."""
    fixed = _inference_breakdown(preset, it, layout, 0, dtype, slots)
    per_token = _inference_breakdown(preset, it, layout, 1 << 20, dtype, slots)["kv_cache"] / (1 << 20)
    room = available - _required(fixed)
    if per_token <= 0:
        return cap
    longest = int(room / per_token)
    if longest >= cap:
        return cap
    return max(longest // MAX_MODEL_LEN_STEP * MAX_MODEL_LEN_STEP, 0)


def plan_inference(preset: Preset, instance_type: InstanceType | str, count: int = 1,
                   max_model_len: int | None = None, runtime: str = "vllm",
                   adapters: int | Sequence = 0) -> InferencePlan:
    """Plan serving `preset` on up to `count` nodes of `instance_type` (the fewest nodes that fit are used).

    `instance_type` may be a catalogue name. `max_model_len=None` picks the longest context that fits (at most
    the model's limit); `adapters` is the number of LoRA adapters served at once, or a list of them (their
    `.rank`, if any, sizes the LoRA slots). Raises DoesNotFit (with the shortfall per GPU and the smallest
    catalogued instance type that fits) or PlanError for impossible requests.
    """
    return _plan_inference(preset, instance_type, count, max_model_len, runtime, adapters, suggest=True)


def _plan_inference(preset, instance_type, count, max_model_len, runtime, adapters, suggest) -> InferencePlan:
    instance_type = _resolve(preset, instance_type)
    if runtime not in ("vllm", "transformers"):
        raise PlanError(f"runtime must be 'vllm' or 'transformers', got {runtime!r}")
    if runtime not in preset.runtimes:
        raise PlanError(f"preset {preset.name} does not support runtime {runtime!r} (supports: "
                        f"{', '.join(preset.runtimes)})")
    if not isinstance(count, int) or count < 1:
        raise PlanError(f"count must be a whole number of nodes >= 1, got {count!r}")
    slots = _adapter_slots(adapters)
    if slots[0] and not preset.lora_serving:
        raise PlanError(f"preset {preset.name} does not allow serving LoRA adapters (Kaito's DisallowLoRA)")
    if max_model_len is not None:
        if not isinstance(max_model_len, int) or max_model_len < 1:
            raise PlanError(f"max_model_len must be a positive number of tokens, got {max_model_len!r}")
        if max_model_len > preset.context_length:
            raise PlanError(f"max_model_len {max_model_len} exceeds the context length of {preset.name} "
                            f"({preset.context_length} tokens)")

    dtype = serving_dtype(preset, instance_type, runtime)
    if dtype == "bfloat16" and instance_type.compute_capability < 8.0:
        raise PlanError(f"preset {preset.name} runs in bfloat16 only, which needs compute capability >= 8.0; "
                        f"{instance_type.name} ({instance_type.gpu_model}) has {instance_type.compute_capability}")
    probe_len = max_model_len or min(preset.context_length, KAITO_DEFAULT_MAX_MODEL_LEN)
    utilization = _usable_fraction(instance_type)
    available = round(instance_type.gpu_memory_gib * utilization, 3)

    layouts = _layouts(preset, instance_type, count, runtime, dtype)
    chosen, breakdown = None, {}
    for layout in layouts:
        breakdown = _inference_breakdown(preset, instance_type, layout, probe_len, dtype, slots)
        if _required(breakdown) <= available:
            chosen = layout
            break
    if chosen is None:
        raise _inference_refusal(preset, instance_type, count, max_model_len, runtime, adapters, slots, layouts,
                                 probe_len, dtype, available, suggest)

    notes = []
    if max_model_len is None:
        max_model_len = _max_fitting_len(preset, instance_type, chosen, dtype, slots, available,
                                         preset.context_length)
        max_model_len = max(max_model_len, probe_len)
        breakdown = _inference_breakdown(preset, instance_type, chosen, max_model_len, dtype, slots)
        while _required(breakdown) > available and max_model_len - MAX_MODEL_LEN_STEP >= probe_len:
            max_model_len -= MAX_MODEL_LEN_STEP  # rounding of the breakdown can tip the longest fit over
            breakdown = _inference_breakdown(preset, instance_type, chosen, max_model_len, dtype, slots)
        if max_model_len < preset.context_length:
            notes.append(f"max_model_len {max_model_len} is the longest that fits (model limit "
                         f"{preset.context_length})")
    if runtime == "transformers":
        notes.append(f"transformers: layers split over {chosen.pp} GPU(s) (device_map=auto); "
                     f"{utilization} is our headroom, not a flag")
    if chosen.tp < instance_type.gpu_count and chosen.dp == 1 and runtime == "vllm":
        why = ("tensor parallelism is disabled for this preset" if not preset.tensor_parallel
               else f"{preset.architecture.attention_heads} attention heads / {preset.architecture.kv_heads} KV "
                    f"heads do not split over {instance_type.gpu_count} GPUs")
        notes.append(f"uses {chosen.tp} of {instance_type.gpu_count} GPUs per node: {why}")
    return InferencePlan(
        preset=preset.name,
        instance_type=instance_type.name,
        runtime=runtime,
        nodes=chosen.nodes,
        gpus_per_node=chosen.gpus_per_node,
        tensor_parallel_size=chosen.tp,
        pipeline_parallel_size=chosen.pp,
        gpu_memory_utilization=utilization,
        max_model_len=max_model_len,
        dtype=dtype,
        breakdown=breakdown,
        required_gib_per_gpu=_required(breakdown),
        available_gib_per_gpu=available,
        data_parallel_size=chosen.dp,
        kv_cache_bytes_per_token=preset.architecture.kv_cache_bytes_per_token(4 if dtype == "float32" else 2),
        notes=tuple(notes),
    )


def _inference_refusal(preset, it, count, max_model_len, runtime, adapters, slots, layouts, probe_len, dtype,
                       available, suggest) -> DoesNotFit:
    last = layouts[-1]
    need = _required(_inference_breakdown(preset, it, last, probe_len, dtype, slots))
    shortfall = need - available
    where = f"{last.nodes} node(s) of {it.name}" if last.nodes > 1 else f"one {it.name}"
    reason = (f"{preset.name} needs {need:.2f} GiB per GPU at max_model_len {probe_len} on {where} "
              f"({last.tp * last.pp} GPU(s) used, {available:.2f} GiB usable each)")
    if runtime == "vllm" and not preset.tensor_parallel and it.gpu_count > 1:
        reason += "; tensor parallelism is disabled for this preset, so it cannot spread over the node's GPUs"
    elif last.tp < it.gpu_count and runtime == "vllm" and last.dp == 1:
        reason += (f"; its {preset.architecture.attention_heads} attention heads split over at most "
                   f"{last.tp} of the node's {it.gpu_count} GPUs")
    if runtime != "vllm":
        if count > 1:
            reason += "; the transformers runtime serves from one node only, whatever --count says"
    elif not preset.distributed:
        if count > 1:
            reason += (f"; {preset.name} is not distributed (no multi-node inference), so it cannot use the "
                       f"{count} nodes asked for: one node must hold it")
    else:
        reason += f"; it is distributed: more nodes than --count {count} would spread it further"
    suggestion = None
    if suggest:
        for candidate in _suggestion_candidates(it):
            try:
                _plan_inference(preset, candidate, count, max_model_len, runtime, adapters, suggest=False)
            except PlanError:
                continue
            suggestion = candidate.name
            break
    return DoesNotFit(reason, shortfall, suggestion)


# ---------------------------------------------------------------------------------------------------------------
# Tuning


def estimate_tuning_memory(preset: Preset, method: str, batch_size: int = 1, seq_len: int = 1024,
                           gradient_checkpointing: bool | None = None, lora_rank: int = TUNING_LORA_RANK,
                           dtype: str | None = None) -> dict[str, float]:
    """GiB one training process needs for a LoRA/QLoRA run on `preset` (Kaito's defaults: r=8, bf16).

    base_weights: QLoRA quantises the linear layers to NF4 (embeddings and head stay 16-bit); LoRA keeps the
    whole base in 16-bit. adapter/gradients: float32 LoRA weights and their gradients (peft upcasts adapters).
    optimizer_state: AdamW's two float32 moments. activations: per-layer activations (Korthikanti et al.),
    only the layer inputs when gradient checkpointing is on (the default for QLoRA, where
    prepare_model_for_kbit_training turns it on, as in Kaito), plus the logits and their gradient.
    overhead: CUDA context and cuBLAS workspaces plus 5% allocator fragmentation.
    """
    if method not in ("lora", "qlora"):
        raise PlanError(f"method must be 'lora' or 'qlora', got {method!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PlanError(f"batch_size must be >= 1, got {batch_size!r}")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise PlanError(f"seq_len must be >= 1, got {seq_len!r}")
    if seq_len > preset.context_length:
        raise PlanError(f"seq_len {seq_len} exceeds the context length of {preset.name} ({preset.context_length})")
    arch = preset.architecture
    if gradient_checkpointing is None:
        gradient_checkpointing = method == "qlora"
    dtype = dtype or str(preset.transformers_params.get("torch_dtype", "bfloat16"))
    if dtype not in ("float32", "bfloat16", "float16"):
        dtype = "bfloat16"
    base_bytes = DTYPE_BYTES[dtype]
    params = preset.parameters_b * 1e9
    embeddings = 2 * arch.vocab_size * arch.hidden_size  # input embeddings + LM head (counted untied)
    if method == "qlora":
        quantised = max(params - embeddings, 0.0)
        base = quantised * NF4_BITS_PER_PARAM / 8 + min(embeddings, params) * base_bytes
    else:
        base = params * base_bytes
    adapter_params = lora_parameters(preset, lora_rank)
    tokens = batch_size * seq_len
    layer_activations = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * tokens * arch.hidden_size * base_bytes / 2
    if gradient_checkpointing:
        activations = arch.layers * tokens * arch.hidden_size * base_bytes + layer_activations
    else:
        activations = arch.layers * layer_activations
    activations += tokens * arch.vocab_size * LOGITS_BYTES_PER_ELEMENT
    parts = {
        "base_weights": base / GIB,
        "adapter": adapter_params * 4 / GIB,
        "optimizer_state": adapter_params * 8 / GIB,
        "gradients": adapter_params * 4 / GIB,
        "activations": activations / GIB,
    }
    parts["overhead"] = TUNING_CUDA_OVERHEAD_GIB + TUNING_FRAGMENTATION * sum(parts.values())
    result = {k: round(v, 3) for k, v in parts.items()}
    result["total"] = round(sum(result.values()), 3)
    return result


class PlanLike(Protocol):
    """What the server's engine flags and the pods' commands read of an InferencePlan (a plan made by hand, without
    an instance type, has the same fields)."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int
    dtype: str


@dataclass(frozen=True)
class TuningPlan:
    """A LoRA/QLoRA run of `preset` on one node: data-parallel, one full copy of the model per GPU (Kaito runs
    `accelerate launch --num_processes=<GPUs>` with `device_map={"": process_index}`)."""

    preset: str
    instance_type: str
    method: str
    batch_size: int
    seq_len: int
    nodes: int
    gpus: int
    dtype: str
    breakdown: dict[str, float]
    """GiB per GPU (estimate_tuning_memory)."""
    required_gib_per_gpu: float
    available_gib_per_gpu: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_tuning(preset: Preset, instance_type: InstanceType | str, method: str, batch_size: int = 1,
                seq_len: int = 1024, count: int = 1) -> TuningPlan:
    """Check that a LoRA/QLoRA run fits each GPU of one `instance_type` node; DoesNotFit says by how much not.

    Kaito declares tuning memory but never checks it; we do. Tuning is single-node, as in Kaito.
    """
    return _plan_tuning(preset, instance_type, method, batch_size, seq_len, count, suggest=True)


def _plan_tuning(preset, instance_type, method, batch_size, seq_len, count, suggest) -> TuningPlan:
    instance_type = _resolve(preset, instance_type)
    if method not in ("lora", "qlora"):
        raise PlanError(f"method must be 'lora' or 'qlora', got {method!r}")
    if not preset.supports_tuning(method):
        supported = ", ".join(preset.tuning.methods) if preset.tuning else "none"
        raise PlanError(f"preset {preset.name} does not support {method} tuning (supported: {supported})")
    if count != 1:
        raise PlanError(f"tuning runs on one node (count=1), as in Kaito; got count={count!r}")
    if method == "qlora" and instance_type.compute_capability < 7.0:
        raise PlanError(f"qlora needs compute capability >= 7.0 (bitsandbytes 4-bit kernels); "
                        f"{instance_type.name} has {instance_type.compute_capability}")
    dtype = str(preset.transformers_params.get("torch_dtype", "bfloat16"))
    if dtype not in ("float32", "bfloat16", "float16"):
        dtype = "bfloat16"
    if dtype == "bfloat16" and instance_type.compute_capability < 8.0:
        dtype = "float16"
    breakdown = estimate_tuning_memory(preset, method, batch_size, seq_len, dtype=dtype)
    required = breakdown["total"]
    available = round(instance_type.gpu_memory_gib * TUNING_USABLE_FRACTION, 3)
    if required > available:
        suggestion = None
        if suggest:
            for candidate in _suggestion_candidates(instance_type):
                try:
                    _plan_tuning(preset, candidate, method, batch_size, seq_len, 1, suggest=False)
                except PlanError:
                    continue
                suggestion = candidate.name
                break
        raise DoesNotFit(
            f"{method} tuning of {preset.name} (batch {batch_size}, seq_len {seq_len}) needs {required:.2f} GiB "
            f"per GPU; {instance_type.name} has {available:.2f} GiB usable per GPU (each GPU holds a full copy)",
            required - available,
            suggestion,
        )
    return TuningPlan(
        preset=preset.name,
        instance_type=instance_type.name,
        method=method,
        batch_size=batch_size,
        seq_len=seq_len,
        nodes=1,
        gpus=instance_type.gpu_count,
        dtype=dtype,
        breakdown={k: v for k, v in breakdown.items() if k != "total"},
        required_gib_per_gpu=required,
        available_gib_per_gpu=available,
    )


def kaito_estimator_min_gpus(preset: Preset, instance_type: InstanceType,
                             max_model_len: int = KAITO_DEFAULT_MAX_MODEL_LEN) -> int:
    """Kaito HEAD's own answer (nodesestimator): the minimum GPUs of this type the model needs. Kept to
    compare with our plans (tests, `kaito plan` notes); raises PlanError where Kaito errors (GPU too small)."""
    weights = preset.weights_gib * WEIGHT_FILE_OVERHEAD
    usable = instance_type.gpu_memory_gib * GPU_MEMORY_UTILIZATION
    # Kaito's own BytesPerToken where it publishes one (some differ from the config formula, see tests/presets).
    bytes_per_token = (preset.kaito and preset.kaito.bytes_per_token) or preset.kv_cache_bytes_per_token
    reserve = ACTIVATIONS_GIB + RUNTIME_OVERHEAD_GIB + max_model_len * bytes_per_token / (
        instance_type.gpu_count * GIB)
    per_gpu = (usable - reserve) / WEIGHT_MARGIN
    if per_gpu <= 0:
        raise PlanError(f"{instance_type.name} GPUs are too small for {preset.name}")
    return int(weights / per_gpu) + 1

