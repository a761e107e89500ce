"""Mistral 7B v0.3, base and instruct (MistralForCausalLM, Apache-2.0), tool calling with vLLM's `mistral` parser.

Numbers: revisions from Kaito's supported_models.yaml; architecture from Kaito's model_catalog.yaml (a copy of
config.json) plus vocab/intermediate from config.json; sizes and GPU figures from kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset, TuningSupport
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS

MISTRAL_7B = Architecture(layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, vocab_size=32768,
                          intermediate_size=14336)


def _mistral(name: str, repo: str, revision: str, kaito: KaitoFigures, tunable: bool, description: str) -> Preset:
    return Preset(
        name=name,
        family="mistral",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=MISTRAL_7B,
        parameters_b=round(13.49 * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=13.49,
        context_length=32768,
        license="Apache-2.0",
        redistributable=True,
        chat_template="mistral-instruct.jinja",
        tool_call_parser="mistral",
        transformers_params={"torch_dtype": "bfloat16"},
        vllm_params={"tokenizer-mode": "mistral", "config-format": "mistral", "load-format": "mistral"},
        tuning=TuningSupport() if tunable else None,
        image_tag="0.2.0",
        readiness_timeout_s=1800,
        kaito=kaito,
        sources={
            "revision": SUPPORTED_MODELS,
            "architecture": f"{MODEL_CATALOG} ({repo}); vocab_size, intermediate_size from config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 32768",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize 13.49Gi",
            "parameters_b": "weights_gib / 2 bytes (bf16)",
            "tool_call_parser": "Kaito v0.10.0 mistral model.go (tool-call-parser mistral)",
            "vllm_params": f"{MODEL_CATALOG} loadFormat/configFormat/tokenizerMode: mistral",
            "chat_template": "Kaito's transformers run params use mistral-instruct.jinja; ours is written from the "
            "[INST] ... [/INST] format of the Mistral-Instruct model card",
            "kaito": KAITO_TABLE,
            "readiness_timeout_s": "Kaito v0.10.0 ReadinessTimeout 30m",
        },
    )


mistral_7b = _mistral(
    "mistral-7b", "mistralai/Mistral-7B-v0.3", "d8cadc02ac76bd617a919d50b092e59d2d110aff",
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=14, disk_gib=90, tuning_total_gpu_memory_gib=16,
                 tuning_per_gpu_memory_gib=16, safetensors_gib=13.49, bytes_per_token=131072, token_limit=32768,
                 image_tag="0.2.0"),
    tunable=True, description="Mistral-7B v0.3 base model.",
)
mistral_7b_instruct = _mistral(
    "mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", "e0bc86c23ce5aae1db576c8cca6f06f1f73af2db",
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=16, disk_gib=90, safetensors_gib=13.49, bytes_per_token=131072,
                 token_limit=32768, image_tag="0.2.0"),
    tunable=False, description="Mistral-7B-Instruct v0.3, function calling.",
)

register(mistral_7b, mistral_7b_instruct)
