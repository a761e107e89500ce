"""Microsoft Phi-4 (14B) and Phi-4-mini-instruct (3.8B): Phi3ForCausalLM, MIT, tunable (lora, qlora).

Sources as in presets/phi3.py: Kaito's model_catalog.yaml / builtin_models.yaml (architecture, sizes,
bytes per token, revisions) and kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import PHI3_TARGET_MODULES, Architecture, KaitoFigures, Preset, TuningSupport
from presets._sources import KAITO_TABLE, MODEL_CATALOG

BUILTIN_MODELS = "kaito-project/kaito presets/workspace/models/builtin_models.yaml (version: commit URL)"

phi_4 = Preset(
    name="phi-4",
    family="phi4",
    hf_repo="microsoft/phi-4",
    revision="187ef0342fff0eb3333be9f00389385e95ef0b61",
    description="Phi-4, 14.7B, 16k context.",
    architecture=Architecture(layers=40, hidden_size=5120, attention_heads=40, kv_heads=10, vocab_size=100352,
                              intermediate_size=17920),
    parameters_b=round(27.31 * 1024**3 / 2 / 1e9, 2),
    weight_dtype="bfloat16",
    weights_gib=27.31,
    context_length=16384,
    license="MIT",
    redistributable=True,
    transformers_params={"torch_dtype": "auto"},
    tuning=TuningSupport(target_modules=PHI3_TARGET_MODULES),
    image_tag="0.2.0",
    readiness_timeout_s=1800,
    kaito=KaitoFigures(gpu_count=1, total_gpu_memory_gib=40, disk_gib=150, tuning_total_gpu_memory_gib=70,
                       tuning_per_gpu_memory_gib=70, safetensors_gib=27.31, bytes_per_token=204800,
                       token_limit=16384, image_tag="0.2.0"),
    sources={
        "revision": BUILTIN_MODELS,
        "architecture": f"{MODEL_CATALOG} (microsoft/phi-4); vocab_size, intermediate_size from config.json",
        "context_length": f"{MODEL_CATALOG} modelTokenLimit",
        "weights_gib": "builtin_models.yaml totalSafeTensorFileSize 27.31Gi",
        "parameters_b": "weights_gib / 2 bytes (bf16)",
        "kaito": KAITO_TABLE + "; builtin_models.yaml",
        "readiness_timeout_s": "builtin_models.yaml readinessTimeout 30m",
        "tuning": "builtin_models.yaml supportTuning: true; Phi3ForCausalLM fused projections",
        "chat_template": "the tokenizer's own (Kaito passes none for phi-4)",
    },
)

phi_4_mini = Preset(
    name="phi-4-mini-instruct",
    family="phi4",
    hf_repo="microsoft/Phi-4-mini-instruct",
    revision="c0fb9e74abda11b496b7907a9c6c9009a7a0488f",
    description="Phi-4-mini-instruct, 3.8B, 128k context, tool calling (phi4_mini_json).",
    architecture=Architecture(layers=32, hidden_size=3072, attention_heads=24, kv_heads=8, vocab_size=200064,
                              intermediate_size=8192),
    parameters_b=round(7.15 * 1024**3 / 2 / 1e9, 2),
    weight_dtype="bfloat16",
    weights_gib=7.15,
    context_length=131072,
    license="MIT",
    redistributable=True,
    tool_call_parser="phi4_mini_json",
    transformers_params={"torch_dtype": "auto"},
    tuning=TuningSupport(target_modules=PHI3_TARGET_MODULES),
    image_tag="0.2.0",
    readiness_timeout_s=1800,
    kaito=KaitoFigures(gpu_count=1, total_gpu_memory_gib=8, disk_gib=70, tuning_total_gpu_memory_gib=72,
                       tuning_per_gpu_memory_gib=72, safetensors_gib=7.15, bytes_per_token=131072,
                       token_limit=131072, image_tag="0.2.0"),
    sources={
        "revision": BUILTIN_MODELS,
        "architecture": f"{MODEL_CATALOG} (microsoft/Phi-4-mini-instruct); vocab_size, intermediate_size from "
        "config.json",
        "context_length": f"{MODEL_CATALOG} modelTokenLimit",
        "weights_gib": "builtin_models.yaml totalSafeTensorFileSize 7.15Gi",
        "parameters_b": "weights_gib / 2 bytes (bf16)",
        "tool_call_parser": "builtin_models.yaml vllm modelRunParams tool-call-parser phi4_mini_json",
        "chat_template": "the tokenizer's own (it renders tools); Kaito ships tool-chat-phi4-mini.jinja, "
        "which we do not copy",
        "kaito": KAITO_TABLE + "; builtin_models.yaml",
        "readiness_timeout_s": "builtin_models.yaml readinessTimeout 30m",
        "tuning": "builtin_models.yaml supportTuning: true; Phi3ForCausalLM fused projections",
    },
)

register(phi_4, phi_4_mini)
