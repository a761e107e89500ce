"""Derive a preset from a Hugging Face `config.json` (and `model.safetensors.index.json`), and print it as a
Python family module, so adding a model needs no hand-typed numbers (`kaito presets generate`).

What cannot be read from the files is set conservatively and said so in `sources`: licence unknown, not
redistributable, revision `main` (pin a commit before publishing). Parser choices follow Kaito HEAD's
generator maps by architecture (kaito-reference.md §1.2).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import MISSING, fields

from presets._schema import (
    DTYPE_BYTES,
    FALCON_TARGET_MODULES,
    GIB,
    LLAMA_PROJECTIONS,
    NAME_PATTERN,
    PHI3_TARGET_MODULES,
    Architecture,
    KaitoFigures,
    Preset,
    TuningSupport,
)

# Kaito HEAD generator.go: toolCallParserArchMap / reasoningParserArchMap (by architecture).
TOOL_PARSERS = {
    "LlamaForCausalLM": "llama3_json",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "hermes",
    "Qwen3ForCausalLM": "hermes",
    "GptOssForCausalLM": "openai",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
REASONING_PARSERS = {
    "GptOssForCausalLM": "openai_gptoss",
    "Qwen3ForCausalLM": "qwen3",
}
# LoRA target modules by architecture; Llama-style projections otherwise.
TARGET_MODULES = {
    "Phi3ForCausalLM": PHI3_TARGET_MODULES,
    "FalconForCausalLM": FALCON_TARGET_MODULES,
}
# Architectures whose linear layers are the usual LoRA targets (MoE experts are not).
TUNABLE = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM", "FalconForCausalLM",
           "Qwen3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM"}
_QUANT_DTYPES = {"fp8": "fp8", "mxfp4": "mxfp4", "bitsandbytes": "nf4", "awq": "nf4", "gptq": "nf4"}


class ConfigError(ValueError):
    """config.json lacks a field we need, or has a value we cannot use (the message names the field)."""


def _first(config: Mapping, *keys: str, required: str | None = None):
    for key in keys:
        if config.get(key) is not None:
            return config[key], key
    if required:
        raise ConfigError(f"config.json has no {required} (looked for {', '.join(keys)})")
    return None, None


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config.json field {key} must be a positive integer, got {value!r}")
    return value


def readiness_timeout_s(weights_gib: float) -> int:
    """Kaito HEAD (vllm_model.go): 15 min + 18 s per GiB of weights, clamped to [30 min, 180 min]."""
    return int(min(max(900 + 18 * weights_gib, 1800), 10800))


def _estimate_parameters(arch: Architecture, tied: bool) -> int:
    """Dense decoder parameter count from the architecture (norms and biases left out)."""
    h, hd = arch.hidden_size, arch.effective_head_dim
    attention = h * arch.attention_heads * hd * 2 + h * arch.kv_heads * hd * 2
    mlp = 3 * h * (arch.intermediate_size or 4 * h)
    embeddings = arch.vocab_size * h * (1 if tied else 2)
    return arch.layers * (attention + mlp) + embeddings


def preset_from_hf_config(config: dict, name: str, safetensors_index: dict | None = None, *,
                          hf_repo: str | None = None, revision: str = "main") -> Preset:
    """A Preset from a Hugging Face config.json dict (multimodal configs: their `text_config`)."""
    if not isinstance(config, Mapping):
        raise ConfigError("config.json must hold a JSON object")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"--name {name!r} must be lower-case letters, digits, '-' or '.' (it becomes an image name)")
    architectures = config.get("architectures") or []
    architecture = architectures[0] if architectures else "unknown"
    text = dict(config)
    if isinstance(config.get("text_config"), Mapping):
        text.update(config["text_config"])  # multimodal (Gemma 3, Mistral 3): size the language model
    sources: dict[str, str] = {}

    layers, k_layers = _first(text, "num_hidden_layers", "n_layer", "num_layers", required="num_hidden_layers")
    hidden, k_hidden = _first(text, "hidden_size", "n_embd", "d_model", required="hidden_size")
    heads, k_heads = _first(text, "num_attention_heads", "n_head", required="num_attention_heads")
    layers, hidden, heads = (_positive_int(layers, k_layers), _positive_int(hidden, k_hidden),
                             _positive_int(heads, k_heads))
    kv, k_kv = _first(text, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if kv is None:
        kv, k_kv = (1, "multi_query") if text.get("multi_query") else (heads, "num_attention_heads (MHA)")
    kv = _positive_int(kv, k_kv)
    vocab, k_vocab = _first(text, "vocab_size", required="vocab_size")
    vocab = _positive_int(vocab, k_vocab)
    head_dim, _ = _first(text, "head_dim")
    head_dim = 0 if head_dim in (None, hidden // heads) else _positive_int(head_dim, "head_dim")
    inter, _ = _first(text, "intermediate_size", "ffn_hidden_size", "n_inner")
    inter = _positive_int(inter, "intermediate_size") if inter else 4 * hidden
    kv_lora_rank = int(text.get("kv_lora_rank") or 0)
    attention = "mla" if kv_lora_rank else "mha" if kv == heads else "mqa" if kv == 1 else "gqa"
    arch = Architecture(layers=layers, hidden_size=hidden, attention_heads=heads, kv_heads=kv, vocab_size=vocab,
                        head_dim=head_dim, intermediate_size=inter, attention=attention,
                        kv_lora_rank=kv_lora_rank, qk_rope_head_dim=int(text.get("qk_rope_head_dim") or 0))
    sources["architecture"] = (f"config.json: {k_layers}, {k_hidden}, {k_heads}, {k_kv}, vocab_size"
                               + (", text_config" if "text_config" in config else ""))

    context, k_context = _first(text, "max_position_embeddings", "n_positions", "max_sequence_length",
                                "seq_length", required="max_position_embeddings")
    context = _positive_int(context, k_context)
    sources["context_length"] = f"config.json {k_context}"

    quant = config.get("quantization_config") or {}
    dtype, k_dtype = _first(config, "torch_dtype", "dtype")
    if quant.get("quant_method") in _QUANT_DTYPES:
        weight_dtype = _QUANT_DTYPES[quant["quant_method"]]
        sources["weight_dtype"] = f"config.json quantization_config.quant_method {quant['quant_method']}"
    elif dtype in DTYPE_BYTES:
        weight_dtype = dtype
        sources["weight_dtype"] = f"config.json {k_dtype}"
    else:
        weight_dtype = "bfloat16"
        sources["weight_dtype"] = "assumed bfloat16 (config.json names no dtype)"

    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    total_size = None
    if safetensors_index is not None:
        total_size = (safetensors_index.get("metadata") or {}).get("total_size")
        if not isinstance(total_size, int) or total_size <= 0:
            raise ConfigError("model.safetensors.index.json has no positive metadata.total_size")
    if total_size:
        weights_gib = round(total_size / GIB, 2)
        sources["weights_gib"] = "model.safetensors.index.json metadata.total_size"
        if weight_dtype in ("float32", "bfloat16", "float16"):
            parameters = total_size / DTYPE_BYTES[weight_dtype]
            sources["parameters_b"] = f"metadata.total_size / {DTYPE_BYTES[weight_dtype]} bytes ({weight_dtype})"
        else:
            parameters = _estimate_parameters(arch, tied)
            sources["parameters_b"] = "estimated from the architecture (quantised weights)"
    else:
        parameters = _estimate_parameters(arch, tied)
        weights_gib = round(parameters * DTYPE_BYTES[weight_dtype] / GIB, 2)
        sources["parameters_b"] = "estimated from the architecture (no safetensors index given)"
        sources["weights_gib"] = "estimated: parameters x dtype bytes (no safetensors index given)"

    tunable = architecture in TUNABLE
    sources.update({
        "revision": "not pinned: set the 40-hex commit of the weights you reviewed",
        "license": "unknown: read the model card; not redistributable until checked",
        "tool_call_parser": f"Kaito HEAD generator toolCallParserArchMap[{architecture}]",
        "reasoning_parser": f"Kaito HEAD generator reasoningParserArchMap[{architecture}]",
        "tensor_parallel": "allowed when the attention heads split over 2 GPUs",
        "distributed": "Kaito HEAD: vLLM-compatible models support multi-node inference",
        "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x GiB, clamped to [30, 180] min",
        "kaito": "Kaito's derived BytesPerToken/ModelTokenLimit for this config (generator.go)",
    })
    return Preset(
        name=name,
        family="generated",
        hf_repo=hf_repo or str(config.get("_name_or_path") or f"local/{name}"),
        revision=revision,
        description=f"Generated from config.json ({architecture}).",
        architecture=arch,
        parameters_b=round(parameters / 1e9, 3),
        weight_dtype=weight_dtype,
        weights_gib=weights_gib,
        context_length=context,
        license="unknown",
        redistributable=False,
        tool_call_parser=TOOL_PARSERS.get(architecture),
        reasoning_parser=REASONING_PARSERS.get(architecture),
        tensor_parallel=heads % 2 == 0,
        distributed=True,
        tuning=TuningSupport(target_modules=TARGET_MODULES.get(architecture, LLAMA_PROJECTIONS)) if tunable else None,
        trust_remote_code=bool(config.get("auto_map")),
        image_tag="0.0.1",
        readiness_timeout_s=readiness_timeout_s(weights_gib),
        kaito=KaitoFigures(safetensors_gib=weights_gib, bytes_per_token=arch.kv_cache_bytes_per_token(2),
                           token_limit=context),
        sources=sources,
    )


# ---------------------------------------------------------------------------------------------------------------
# Printing


def preset_to_dict(preset: Preset) -> dict:
    """A JSON-able view of a preset, with the derived figures (KV bytes per token, image name) added."""
    def plain(value):
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if hasattr(value, "__dataclass_fields__"):
            return {f: plain(getattr(value, f)) for f in value.__dataclass_fields__}
        return value

    data = plain(preset)
    data["kv_cache_bytes_per_token"] = preset.kv_cache_bytes_per_token
    data["image"] = f"{preset.image_name}:{preset.image_tag}"
    return data


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _args(obj, indent: str) -> str:
    """Keyword arguments of a dataclass instance, leaving out those equal to the field default."""
    lines = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        default = _default(f)
        if default is not MISSING and value == default:
            continue
        lines.append(f"{indent}{f.name}={_source(value, indent)},")
    return "\n".join(lines)


def _source(value, indent: str) -> str:
    if hasattr(value, "__dataclass_fields__"):
        inner = indent + "    "
        return f"{type(value).__name__}(\n{_args(value, inner)}\n{indent})"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        inner = indent + "    "
        items = "\n".join(f"{inner}{k!r}: {v!r}," for k, v in value.items())
        return "{\n" + items + f"\n{indent}}}"
    return repr(value)


def python_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    if ident[0].isdigit() or keyword.iskeyword(ident):
        ident = "preset_" + ident
    return ident


def render_preset_module(preset: Preset, origin: str = "config.json") -> str:
    """Python source of a family module that registers `preset` (review it, then add it to presets/)."""
    var = python_identifier(preset.name)
    return (
        f'"""{preset.name}: generated by `kaito presets generate` from {origin}.\n\n'
        "Review every number, pin `revision` to a commit, set `license`/`redistributable`, then save this as\n"
        'presets/<family>.py and add <family> to _FAMILIES in presets/__init__.py.\n"""\n\n'
        "from presets import register\n"
        "from presets._schema import Architecture, KaitoFigures, Preset, TuningSupport  # noqa: F401\n\n"
        f"{var} = Preset(\n{_args(preset, '    ')}\n)\n\n"
        f"register({var})\n"
    )
