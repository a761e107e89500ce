"""Registry-driven checks: every registered preset is run through the same rows, so adding a preset adds rows.

Kaito's figures come from kaito-reference.md §1.3 and are stored on each preset (`preset.kaito`); these tests
compare our derived numbers with them and pin each known disagreement to an explanation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import presets
from presets._schema import DTYPE_BYTES, GIB

ALL = presets.names()
HUB = [n for n in ALL if not presets.get(n).is_local]
TEMPLATES = Path(presets.__file__).parent / "chat_templates"

ISSUE_PRESETS = {
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3.5-mini-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-4", "phi-4-mini-instruct", "falcon-7b", "falcon-7b-instruct", "falcon-40b",
    "falcon-40b-instruct", "mistral-7b", "mistral-7b-instruct", "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct", "llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b", "gemma-3-4b-instruct", "gemma-3-27b-instruct", "gpt-oss-20b",
}
# Kaito v0.10.0 columns "Dist" and "Tune" (kaito-reference.md §1.3).
KAITO_DISTRIBUTED = {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "deepseek-r1-0528", "deepseek-v3-0324"}
KAITO_TUNABLE = {
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3.5-mini-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-4", "phi-4-mini-instruct", "falcon-7b", "falcon-40b", "mistral-7b",
    "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct",
}
# vLLM parser names (vllm/entrypoints/openai/tool_parsers, reasoning parsers) that our presets use.
TOOL_PARSERS = {"hermes", "llama3_json", "mistral", "phi4_mini_json", "openai", "deepseek_v3"}
REASONING_PARSERS = {"deepseek_r1", "openai_gptoss"}


def test_registry_has_the_issue_presets_and_the_local_ones():
    assert ISSUE_PRESETS <= set(ALL)
    assert {"tiny-llama", "smollm2-135m-instruct"} <= set(ALL)
    assert len(ALL) >= 24


@pytest.mark.parametrize("name", ALL)
def test_schema_sanity(name):
    p = presets.get(name)
    arch = p.architecture
    assert p.revision == "local" if p.is_local else re.fullmatch(r"[0-9a-f]{40}", p.revision), p.revision
    assert p.weight_dtype in DTYPE_BYTES
    assert min(arch.layers, arch.hidden_size, arch.attention_heads, arch.kv_heads, arch.vocab_size) > 0
    assert arch.kv_heads <= arch.attention_heads and arch.attention_heads % arch.kv_heads == 0
    if arch.attention == "mla":  # DeepSeek V3/R1: 128 KV heads in config.json, but the cache is one latent
        assert arch.kv_lora_rank > 0 and arch.qk_rope_head_dim > 0
    else:
        assert arch.attention == ("mha" if arch.kv_heads == arch.attention_heads else arch.attention)
    assert p.parameters_b > 0 and p.weights_gib > 0 and p.context_length >= 2048
    assert p.runtimes and set(p.runtimes) <= {"vllm", "transformers"}
    assert 300 <= p.readiness_timeout_s <= 3 * 3600
    assert re.fullmatch(r"\d+\.\d+\.\d+", p.image_tag)
    if p.gated:
        assert not p.redistributable, "gated weights may not be baked into a public image"
    if p.chat_template:
        assert (TEMPLATES / p.chat_template).is_file()
    assert p.tool_call_parser in TOOL_PARSERS | {None}
    assert p.reasoning_parser in REASONING_PARSERS | {None}
    if p.tuning:
        assert p.tuning.methods and set(p.tuning.methods) <= {"lora", "qlora"} and p.tuning.target_modules
    assert not p.trust_remote_code, "no preset needs remote code with transformers 5"


@pytest.mark.parametrize("name", HUB)
def test_every_number_has_a_source(name):
    p = presets.get(name)
    needed = {"revision", "architecture", "context_length", "weights_gib", "parameters_b", "kaito"}
    assert needed <= set(p.sources), needed - set(p.sources)
    assert all(isinstance(v, str) and len(v) > 10 for v in p.sources.values())


@pytest.mark.parametrize("name", [n for n in HUB if presets.get(n).weight_dtype in ("bfloat16", "float16")])
def test_parameters_agree_with_the_weight_files(name):
    """16-bit weights: file size / 2 bytes ~ parameter count (Gemma 3 files also hold the vision tower)."""
    p = presets.get(name)
    from_files = p.weights_gib * GIB / DTYPE_BYTES[p.weight_dtype] / 1e9
    assert from_files == pytest.approx(p.parameters_b, rel=0.10)


# Kaito's published BytesPerToken where it is not the config.json formula, and how Kaito got its number.
# Ours is 2 x kv_heads x head_dim x layers x 2 bytes (vLLM's real KV layout); for MLA (DeepSeek V3/R1), one
# compressed latent plus the rotary key per layer: (kv_lora_rank + qk_rope_head_dim) x layers x 2 bytes.
KAITO_BPT_MISTAKES = {
    "falcon-40b": ("copied falcon-7b's value (1 KV head, 32 layers)", lambda a: 2 * 1 * 64 * 32 * 2),
    "falcon-40b-instruct": ("counted all 128 heads as KV heads (ignored num_kv_heads=8)",
                            lambda a: 2 * a.attention_heads * a.effective_head_dim * a.layers * 2),
    "gemma-3-4b-instruct": ("all heads as KV heads, and hidden/heads=320 instead of head_dim=256",
                            lambda a: 2 * a.attention_heads * (a.hidden_size // a.attention_heads) * a.layers * 2),
    "gemma-3-27b-instruct": ("hidden/heads=168 instead of head_dim=128",
                             lambda a: 2 * a.kv_heads * (a.hidden_size // a.attention_heads) * a.layers * 2),
    "gpt-oss-20b": ("hidden/heads=45 instead of head_dim=64",
                    lambda a: 2 * a.kv_heads * (a.hidden_size // a.attention_heads) * a.layers * 2),
}


@pytest.mark.parametrize("name", [n for n in HUB if presets.get(n).kaito.bytes_per_token])
def test_kv_bytes_per_token_vs_kaito(name):
    p = presets.get(name)
    a = p.architecture
    if a.attention == "mla":
        assert p.kv_cache_bytes_per_token == (a.kv_lora_rank + a.qk_rope_head_dim) * a.layers * 2
    else:
        assert p.kv_cache_bytes_per_token == 2 * a.kv_heads * a.effective_head_dim * a.layers * 2
    if name in KAITO_BPT_MISTAKES:
        why, kaito_formula = KAITO_BPT_MISTAKES[name]
        assert p.kv_cache_bytes_per_token != p.kaito.bytes_per_token, f"Kaito was fixed? ({why})"
        assert kaito_formula(a) == p.kaito.bytes_per_token, f"Kaito's number is not explained by: {why}"
    else:
        assert p.kv_cache_bytes_per_token == p.kaito.bytes_per_token


@pytest.mark.parametrize("name", HUB)
def test_sizes_limits_and_tags_match_kaito(name):
    p = presets.get(name)
    assert p.weights_gib == p.kaito.safetensors_gib
    assert p.context_length == p.kaito.token_limit
    assert p.image_tag == p.kaito.image_tag


@pytest.mark.parametrize("name", sorted(ISSUE_PRESETS))
def test_flags_follow_kaito(name):
    p = presets.get(name)
    assert p.distributed == (name in KAITO_DISTRIBUTED)
    assert p.supports_tuning() == (name in KAITO_TUNABLE)
    if p.tuning:
        assert set(p.tuning.methods) == {"lora", "qlora"}
    small_falcon = name in ("falcon-7b", "falcon-7b-instruct")
    assert p.tensor_parallel == (not small_falcon)
    assert p.lora_serving == (not small_falcon)
    assert p.gated == (p.family in ("llama", "gemma"))


def test_target_modules_match_each_architecture():
    assert presets.get("phi-3-mini-4k-instruct").tuning.target_modules == (
        "qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    assert presets.get("phi-4").tuning.target_modules == presets.get("phi-3-mini-4k-instruct").tuning.target_modules
    assert presets.get("falcon-7b").tuning.target_modules == (
        "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    assert len(presets.get("mistral-7b").tuning.target_modules) == 7
    assert "q_proj" in presets.get("qwen2.5-coder-7b-instruct").tuning.target_modules


def test_parsers_follow_kaito():
    assert presets.get("phi-4-mini-instruct").tool_call_parser == "phi4_mini_json"
    assert presets.get("qwen2.5-coder-32b-instruct").tool_call_parser == "hermes"
    assert presets.get("llama-3.3-70b-instruct").tool_call_parser == "llama3_json"
    assert presets.get("mistral-7b-instruct").tool_call_parser == "mistral"
    assert presets.get("deepseek-r1-distill-qwen-14b").reasoning_parser == "deepseek_r1"
    assert presets.get("gpt-oss-20b").reasoning_parser == "openai_gptoss"
    r1, v3 = presets.get("deepseek-r1-0528"), presets.get("deepseek-v3-0324")
    assert r1.tool_call_parser == v3.tool_call_parser == "deepseek_v3"
    assert (r1.reasoning_parser, v3.reasoning_parser) == ("deepseek_r1", None)
    assert r1.distributed and v3.distributed and not r1.supports_tuning() and not v3.supports_tuning()


def test_readiness_timeout_follows_kaitos_formula_where_kaito_states_none():
    """15 min + 18 s x GiB, clamped to [30, 180] min (Kaito HEAD vllm_model.go)."""
    from runtime.sizing.generate import readiness_timeout_s

    assert presets.get("llama-3.3-70b-instruct").readiness_timeout_s == readiness_timeout_s(131.42) == 3265
    assert presets.get("llama-3.1-8b-instruct").readiness_timeout_s == readiness_timeout_s(14.96) == 1800
    assert presets.get("gemma-3-27b-instruct").readiness_timeout_s == 45 * 60  # Kaito states 45m
    assert readiness_timeout_s(1000) == 3 * 3600
