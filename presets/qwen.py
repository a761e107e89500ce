"""Qwen2.5-Coder 7B and 32B Instruct (Qwen2ForCausalLM, Apache-2.0), tool calling with vLLM's `hermes` parser.

Numbers: revisions from Kaito's supported_models.yaml; architecture from Kaito's model_catalog.yaml plus
vocab/intermediate from config.json; sizes and GPU figures from kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset, TuningSupport
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS


def _qwen(name: str, repo: str, revision: str, arch: Architecture, weights_gib: float, kaito: KaitoFigures,
          description: str) -> Preset:
    return Preset(
        name=name,
        family="qwen",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        parameters_b=round(weights_gib * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=32768,
        license="Apache-2.0",
        redistributable=True,
        tool_call_parser="hermes",
        transformers_params={"torch_dtype": "bfloat16"},
        tuning=TuningSupport(),
        image_tag="0.2.0",
        readiness_timeout_s=1800,
        kaito=kaito,
        sources={
            "revision": SUPPORTED_MODELS,
            "architecture": f"{MODEL_CATALOG} ({repo}); vocab_size, intermediate_size from config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 32768",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize",
            "parameters_b": "weights_gib / 2 bytes (bf16)",
            "tool_call_parser": "Kaito v0.10.0 qwen model.go (hermes, with tool-chat-hermes.jinja)",
            "chat_template": "the tokenizer's own, which renders tools in the hermes format; Kaito's "
            "tool-chat-hermes.jinja is not copied",
            "kaito": KAITO_TABLE,
            "readiness_timeout_s": "Kaito v0.10.0 ReadinessTimeout 30m",
        },
    )


qwen_coder_7b = _qwen(
    "qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", "c03e6d358207e414f1eca0bb1891e29f1db0e242",
    Architecture(layers=28, hidden_size=3584, attention_heads=28, kv_heads=4, vocab_size=152064,
                 intermediate_size=18944),
    14.19,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=24, disk_gib=110, tuning_total_gpu_memory_gib=24,
                 tuning_per_gpu_memory_gib=24, safetensors_gib=14.19, bytes_per_token=57344, token_limit=32768,
                 image_tag="0.2.0"),
    "Qwen2.5-Coder-7B-Instruct.",
)
qwen_coder_32b = _qwen(
    "qwen2.5-coder-32b-instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", "381fc969f78efac66bc87ff7ddeadb7e73c218a7",
    Architecture(layers=64, hidden_size=5120, attention_heads=40, kv_heads=8, vocab_size=152064,
                 intermediate_size=27648),
    61.03,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=70, disk_gib=230, tuning_total_gpu_memory_gib=140,
                 tuning_per_gpu_memory_gib=70, safetensors_gib=61.03, bytes_per_token=262144, token_limit=32768,
                 image_tag="0.2.0"),
    "Qwen2.5-Coder-32B-Instruct.",
)

register(qwen_coder_7b, qwen_coder_32b)
