"""Microsoft Phi-3 and Phi-3.5 (Phi3ForCausalLM, MIT). Served with our phi-3 chat template; tunable (lora, qlora).

Numbers: architecture from Kaito's model_catalog.yaml (which copies config.json: hiddenSize, numHiddenLayers,
numAttentionHeads, numKeyValueHeads, modelTokenLimit) plus vocab/intermediate sizes from each config.json;
revisions from Kaito's supported_models.yaml `version:` commit URLs; sizes, bytes/token and GPU figures from
kaito-reference.md §1.3 (Kaito v0.6.2 and v0.10.0 model.go).
"""

from presets import register
from presets._schema import PHI3_TARGET_MODULES, Architecture, KaitoFigures, Preset, TuningSupport
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS

MINI = Architecture(layers=32, hidden_size=3072, attention_heads=32, kv_heads=32, vocab_size=32064,
                    intermediate_size=8192, attention="mha")
MEDIUM = Architecture(layers=40, hidden_size=5120, attention_heads=40, kv_heads=10, vocab_size=32064,
                      intermediate_size=17920)


def _phi3(name: str, repo: str, revision: str, arch: Architecture, weights_gib: float, context: int,
          kaito: KaitoFigures, description: str) -> Preset:
    return Preset(
        name=name,
        family="phi3",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        # bf16 safetensors: 2 bytes per parameter.
        parameters_b=round(weights_gib * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=context,
        license="MIT",
        redistributable=True,
        chat_template="phi-3.jinja",
        transformers_params={"torch_dtype": "auto"},
        tuning=TuningSupport(target_modules=PHI3_TARGET_MODULES),
        image_tag="0.2.0",
        readiness_timeout_s=1800,
        kaito=kaito,
        sources={
            "revision": SUPPORTED_MODELS,
            "architecture": f"{MODEL_CATALOG} ({repo}); vocab_size and intermediate_size from its config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize",
            "parameters_b": "weights_gib / 2 bytes (bf16)",
            "kaito": KAITO_TABLE,
            "readiness_timeout_s": "Kaito v0.10.0 ReadinessTimeout 30m",
            "image_tag": "Kaito HEAD supported_models.yaml tag",
            "tuning": "Kaito SupportTuning=true; target modules are Phi3's fused projections (transformers "
            "modeling_phi3: qkv_proj, o_proj, gate_up_proj, down_proj)",
            "trust_remote_code": "Kaito passes trust_remote_code; transformers >= 4.40 has Phi3 natively, so we don't",
        },
    )


phi_3_mini_4k = _phi3(
    "phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", "0a67737cc96d2554230f90338b163bc6380a2a85",
    MINI, 7.12, 4096,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=9, disk_gib=80, tuning_total_gpu_memory_gib=72,
                 tuning_per_gpu_memory_gib=72, safetensors_gib=7.12, bytes_per_token=393216, token_limit=4096,
                 image_tag="0.2.0"),
    "Phi-3-mini, 3.8B, 4k context.",
)
phi_3_mini_128k = _phi3(
    "phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-128k-instruct", "072cb7562cb8c4adf682a8e186aaafa49469eb5d",
    MINI, 7.12, 131072,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=9, disk_gib=80, tuning_total_gpu_memory_gib=72,
                 tuning_per_gpu_memory_gib=72, safetensors_gib=7.12, bytes_per_token=393216, token_limit=131072,
                 image_tag="0.2.0"),
    "Phi-3-mini, 3.8B, 128k context (LongRoPE).",
)
phi_3_5_mini = _phi3(
    "phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", "3145e03a9fd4cdd7cd953c34d9bbf7ad606122ca",
    MINI, 7.12, 131072,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=8, disk_gib=70, tuning_total_gpu_memory_gib=72,
                 tuning_per_gpu_memory_gib=72, safetensors_gib=7.12, bytes_per_token=393216, token_limit=131072,
                 image_tag="0.2.0"),
    "Phi-3.5-mini, 3.8B, 128k context.",
)
phi_3_medium_4k = _phi3(
    "phi-3-medium-4k-instruct", "microsoft/Phi-3-medium-4k-instruct", "b64223aaea6fbf273c0c8cd0801d5e732dce8897",
    MEDIUM, 26.0, 4096,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=28, disk_gib=120, tuning_total_gpu_memory_gib=80,
                 tuning_per_gpu_memory_gib=80, safetensors_gib=26.0, bytes_per_token=204800, token_limit=4096,
                 image_tag="0.2.0"),
    "Phi-3-medium, 14B, 4k context.",
)
phi_3_medium_128k = _phi3(
    "phi-3-medium-128k-instruct", "microsoft/Phi-3-medium-128k-instruct",
    "fa7d2aa4f5ea69b2e36b20d050cdae79c9bfbb3f",
    MEDIUM, 26.0, 131072,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=28, disk_gib=120, tuning_total_gpu_memory_gib=80,
                 tuning_per_gpu_memory_gib=80, safetensors_gib=26.0, bytes_per_token=204800, token_limit=131072,
                 image_tag="0.2.0"),
    "Phi-3-medium, 14B, 128k context.",
)

register(phi_3_mini_4k, phi_3_mini_128k, phi_3_5_mini, phi_3_medium_4k, phi_3_medium_128k)
