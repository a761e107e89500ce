"""`preset_from_hf_config` on realistic config.json files, and the printed module round-trip."""

from __future__ import annotations

import pytest

import presets
from runtime.sizing.generate import (
    ConfigError,
    preset_from_hf_config,
    preset_to_dict,
    python_identifier,
    render_preset_module,
)
from runtime.sizing.plan import plan_inference

# meta-llama/Llama-3.1-8B-Instruct config.json (as published) and its safetensors index total size.
LLAMA_31_8B_CONFIG = {
    "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}
LLAMA_31_8B_INDEX = {"metadata": {"total_size": 16060522496},
                     "weight_map": {"lm_head.weight": "model-00004-of-00004.safetensors"}}


def test_llama_config_gives_the_registered_presets_numbers():
    generated = preset_from_hf_config(LLAMA_31_8B_CONFIG, "my-llama", LLAMA_31_8B_INDEX)
    reference = presets.get("llama-3.1-8b-instruct")
    assert generated.architecture == reference.architecture
    assert generated.kv_cache_bytes_per_token == reference.kaito.bytes_per_token == 131072
    assert generated.weights_gib == reference.weights_gib == 14.96
    assert generated.parameters_b == pytest.approx(8.03, abs=0.01)
    assert generated.context_length == 131072 and generated.weight_dtype == "bfloat16"
    assert generated.tool_call_parser == "llama3_json" and generated.reasoning_parser is None
    assert len(generated.tuning.target_modules) == 7
    assert generated.hf_repo == "meta-llama/Llama-3.1-8B-Instruct" and generated.revision == "main"
    assert generated.readiness_timeout_s == 1800 and not generated.redistributable
    assert "metadata.total_size" in generated.sources["weights_gib"]
    # A generated preset plans like any other.
    assert plan_inference(generated, _a100()).max_model_len == 131072


def test_without_an_index_the_size_is_estimated_from_the_architecture():
    generated = preset_from_hf_config(LLAMA_31_8B_CONFIG, "my-llama")
    assert generated.parameters_b == pytest.approx(8.03, rel=0.01)
    assert generated.weights_gib == pytest.approx(14.96, rel=0.01)
    assert "estimated" in generated.sources["weights_gib"]


def test_multimodal_config_uses_the_text_config():
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "torch_dtype": "bfloat16",
              "text_config": {"hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8,
                              "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 10240,
                              "vocab_size": 262208, "max_position_embeddings": 131072},
              "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27}}
    generated = preset_from_hf_config(config, "gemma-copy")
    assert generated.architecture == presets.get("gemma-3-4b-instruct").architecture
    assert generated.tuning is None


def test_falcon_style_config_and_missing_fields():
    config = {"architectures": ["FalconForCausalLM"], "hidden_size": 4544, "n_head": 71, "n_layer": 32,
              "multi_query": True, "parallel_attn": True, "vocab_size": 65024, "torch_dtype": "bfloat16"}
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        preset_from_hf_config(config, "falcon-copy")
    generated = preset_from_hf_config({**config, "max_position_embeddings": 2048}, "falcon-copy")
    reference = presets.get("falcon-7b")
    assert generated.architecture == reference.architecture
    assert not generated.tensor_parallel  # 71 heads
    assert generated.tuning.target_modules == reference.tuning.target_modules


@pytest.mark.parametrize(("patch", "message"), [
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ({"vocab_size": None}, "no vocab_size"),
    ({"num_key_value_heads": "8"}, "num_key_value_heads must be a positive integer"),
])
def test_bad_fields_are_named(patch, message):
    with pytest.raises(ConfigError, match=message):
        preset_from_hf_config({**LLAMA_31_8B_CONFIG, **patch}, "bad")


def test_bad_name_and_bad_index():
    with pytest.raises(ConfigError, match="--name 'My Model'"):
        preset_from_hf_config(LLAMA_31_8B_CONFIG, "My Model")
    with pytest.raises(ConfigError, match="metadata.total_size"):
        preset_from_hf_config(LLAMA_31_8B_CONFIG, "ok", {"weight_map": {}})


def test_rendered_module_round_trips(monkeypatch):
    generated = preset_from_hf_config(LLAMA_31_8B_CONFIG, "my-llama", LLAMA_31_8B_INDEX)
    source = render_preset_module(generated)
    registered = []
    monkeypatch.setattr(presets, "register", lambda *items: registered.extend(items))
    namespace: dict = {}
    exec(compile(source, "generated.py", "exec"), namespace)  # noqa: S102 - our own printer's output
    assert registered == [namespace[python_identifier("my-llama")]]
    assert preset_to_dict(registered[0]) == preset_to_dict(generated)


@pytest.mark.parametrize("name", presets.names())
def test_every_registered_preset_prints_as_source_that_rebuilds_it(name, monkeypatch):
    preset = presets.get(name)
    registered = []
    monkeypatch.setattr(presets, "register", lambda *items: registered.extend(items))
    exec(compile(render_preset_module(preset), name, "exec"), {})  # noqa: S102
    assert registered == [preset]


def _a100():
    from runtime.sizing.catalog import get_instance_type

    return get_instance_type("Standard_NC24ads_A100_v4")
