"""Engine-argument derivation for the vLLM backend: pure functions, no vLLM needed (runs in the main venv)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import presets
from runtime.inference.vllm_args import (
    Adapter,
    EngineArgsError,
    VllmSettings,
    engine_args,
    find_adapters,
    lora_rank_limit,
    merged_flags,
)
from runtime.inference.vllm_config import InferenceConfigError, flags_to_argv, load_config, parse_config


@dataclasses.dataclass
class Plan:
    """Stands in for runtime.sizing.plan.InferencePlan: the attributes engine_args reads."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.84
    max_model_len: int = 4096
    dtype: str = "bfloat16"


def preset(**changes) -> presets.Preset:
    return dataclasses.replace(presets.get("tiny-llama"), **{"vllm_params": {}, **changes})


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} appears {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


def write_adapter(root: Path, name: str, rank) -> Path:
    from tests.adapters.test_folder import safetensors_bytes

    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(safetensors_bytes())  # one rule: safetensors weights too
    return folder


def test_plan_sets_parallelism_length_memory_and_dtype():
    argv = engine_args(preset(), Plan(tensor_parallel_size=4), VllmSettings(model_path="/w", port=5000))
    assert option(argv, "--model") == "/w"
    assert option(argv, "--served-model-name") == "tiny-llama"
    assert option(argv, "--tensor-parallel-size") == "4"
    assert option(argv, "--max-model-len") == "4096"
    assert option(argv, "--gpu-memory-utilization") == "0.84"
    assert option(argv, "--dtype") == "bfloat16"
    assert option(argv, "--port") == "5000"
    assert "--pipeline-parallel-size" not in argv and "--enable-lora" not in argv
    assert "--trust-remote-code" not in argv


def test_replicas_and_quantized_dtypes_from_the_plan():
    plan = Plan(tensor_parallel_size=1, dtype="mxfp4")
    plan.data_parallel_size = 2
    argv = engine_args(preset(), plan, VllmSettings())
    assert option(argv, "--data-parallel-size") == "2"
    assert option(argv, "--dtype") == "auto"


def test_real_sizing_plans_feed_engine_args():
    from runtime.sizing.plan import plan_inference

    plan = plan_inference(presets.get("llama-3.3-70b-instruct"), "Standard_NC80adis_H100_v5", 1)
    argv = engine_args(presets.get("llama-3.3-70b-instruct"), plan, VllmSettings())
    assert option(argv, "--tensor-parallel-size") == str(plan.tensor_parallel_size)
    assert option(argv, "--max-model-len") == str(plan.max_model_len)
    assert option(argv, "--gpu-memory-utilization") == str(plan.gpu_memory_utilization)
    assert option(argv, "--tool-call-parser") == presets.get("llama-3.3-70b-instruct").tool_call_parser


def test_several_nodes_use_pipeline_parallel_over_ray():
    p = preset(distributed=True)
    argv = engine_args(p, Plan(tensor_parallel_size=8, pipeline_parallel_size=2), VllmSettings())
    assert option(argv, "--pipeline-parallel-size") == "2"
    assert option(argv, "--distributed-executor-backend") == "ray"


def test_plan_that_the_preset_cannot_run_is_refused_naming_the_field():
    with pytest.raises(EngineArgsError, match="tensor_parallel_size 2.*tensor parallelism"):
        engine_args(preset(tensor_parallel=False), Plan(tensor_parallel_size=2), VllmSettings())
    with pytest.raises(EngineArgsError, match="pipeline_parallel_size 2.*distributed"):
        engine_args(preset(distributed=False), Plan(pipeline_parallel_size=2), VllmSettings())


def test_without_plan_the_context_limit_comes_from_the_preset():
    argv = engine_args(preset(), None, VllmSettings())
    assert option(argv, "--max-model-len") == "2048"
    assert "--tensor-parallel-size" not in argv


def test_parsers_template_and_remote_code_come_from_the_preset(tmp_path):
    p = preset(chat_template="tool-chat-hermes.jinja", tool_call_parser="hermes", reasoning_parser="deepseek_r1",
               trust_remote_code=True)
    argv = engine_args(p, Plan(), VllmSettings(chat_templates=tmp_path, max_num_seqs=64))
    assert option(argv, "--chat-template") == str(tmp_path / "tool-chat-hermes.jinja")
    assert option(argv, "--tool-call-parser") == "hermes"
    assert "--enable-auto-tool-choice" in argv
    assert option(argv, "--reasoning-parser") == "deepseek_r1"
    assert "--trust-remote-code" in argv
    assert option(argv, "--max-num-seqs") == "64"


def test_adapters_found_set_max_loras_and_a_rank_vllm_accepts(tmp_path):
    write_adapter(tmp_path, "fr", 16)
    write_adapter(tmp_path, "code", 48)
    write_adapter(tmp_path, "small", 4)
    (tmp_path / "not-an-adapter").mkdir()
    adapters = find_adapters(tmp_path)
    assert [(a.name, a.rank) for a in adapters] == [("code", 48), ("fr", 16), ("small", 4)]
    argv = engine_args(preset(), Plan(), VllmSettings(adapters=tuple(adapters)))
    assert "--enable-lora" in argv
    assert option(argv, "--max-loras") == "3"
    assert option(argv, "--max-lora-rank") == "64"  # 48 rounds up to vLLM's next allowed rank
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 4] == [f"code={tmp_path / 'code'}", f"fr={tmp_path / 'fr'}", f"small={tmp_path / 'small'}"]


def test_adapter_rank_limits():
    assert lora_rank_limit([8]) == 8
    assert lora_rank_limit([17]) == 32
    assert lora_rank_limit([300]) == 320
    with pytest.raises(EngineArgsError, match="513"):
        lora_rank_limit([513])


def test_bad_adapter_config_names_the_file_and_field(tmp_path):
    assert find_adapters(tmp_path / "missing") == []
    write_adapter(tmp_path, "bad", "sixteen")
    with pytest.raises(EngineArgsError, match=r"bad/adapter_config.json: field r"):
        find_adapters(tmp_path)


def test_adapters_on_a_preset_without_lora_serving_are_refused(tmp_path):
    adapters = (Adapter("fr", tmp_path, 16),)
    with pytest.raises(EngineArgsError, match="fr.*does not allow LoRA"):
        engine_args(preset(lora_serving=False), Plan(), VllmSettings(adapters=adapters))


def test_preset_params_beat_the_plan_and_the_user_beats_both():
    p = preset(vllm_params={"dtype": "float32", "enforce-eager": True})
    user = parse_config({"vllm": {"max_model_len": 1024, "dtype": "half", "enforce-eager": False,
                                  "enable-chunked-prefill": True}})
    flags = merged_flags(p, Plan(), VllmSettings(), user)
    assert flags["max-model-len"] == 1024 and flags["dtype"] == "half"
    argv = engine_args(p, Plan(), VllmSettings(), user)
    assert option(argv, "--dtype") == "half"
    assert "--no-enforce-eager" in argv and "--enforce-eager" not in argv
    assert "--enable-chunked-prefill" in argv
    assert argv.count("--max-model-len") == 1
    without_user = engine_args(p, Plan(), VllmSettings())
    assert option(without_user, "--dtype") == "float32" and "--enforce-eager" in without_user


def test_flags_render_like_vllm_command_lines():
    argv = flags_to_argv({"a": True, "b": False, "c": None, "d": [1, 2], "e": {"k": 1}, "f": 0.5})
    assert argv == ["--a", "--no-b", "--d", "1", "2", "--e", '{"k":1}', "--f", "0.5"]


def test_kaito_inference_config_file(tmp_path):
    path = tmp_path / "inference_config.yaml"
    path.write_text("max_probe_steps: 6\nkv_cache_cpu_memory_utilization: 0.5\n"
                    "vllm:\n  cpu-offload-gb: 0\n  gpu_memory_utilization: 0.95\n")
    cfg = load_config(path)
    assert dict(cfg.vllm) == {"cpu-offload-gb": 0, "gpu-memory-utilization": 0.95}
    assert cfg.max_probe_steps == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vllm: [1, 2]", "vllm must be a mapping"),
        ("vlm:\n  dtype: half", "unknown key.*vlm"),
        ("vllm:\n  port: 8000", "vllm.port: set by the server"),
        ("vllm:\n  'bad flag!': 1", "vllm.bad flag!: not a command-line flag"),
        ("vllm:\n  max-model-len: 1\n  max_model_len: 2", "given twice"),
        ("kv_cache_cpu_memory_utilization: 2", "kv_cache_cpu_memory_utilization must be"),
        ("max_probe_steps: -1", "max_probe_steps must be"),
        ("vllm: {a: 1", "not valid YAML"),
        ("- 1", "must be a mapping"),
    ],
)
def test_bad_inference_config_names_the_field(tmp_path, text, message):
    path = tmp_path / "inference_config.yaml"
    path.write_text(text)
    with pytest.raises(InferenceConfigError, match=message):
        load_config(path)


def test_missing_config_file_is_an_error_but_no_file_at_all_is_fine(tmp_path):
    with pytest.raises(InferenceConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    assert dict(load_config(None).vllm) == {}
