"""DeepSeek-R1 distills on Llama-3.1-8B and Qwen2.5-14B (MIT): reasoning models, vLLM `deepseek_r1` parser.

Numbers: revisions from Kaito's supported_models.yaml; architecture from Kaito's model_catalog.yaml plus
vocab/intermediate from config.json; sizes and GPU figures from kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset
from presets.phi3 import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS


def _distill(name: str, repo: str, revision: str, arch: Architecture, weights_gib: float, kaito: KaitoFigures,
             description: str) -> Preset:
    return Preset(
        name=name,
        family="deepseek",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        parameters_b=round(weights_gib * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=131072,
        license="MIT",
        redistributable=True,
        reasoning_parser="deepseek_r1",
        transformers_params={"torch_dtype": "bfloat16"},
        image_tag="0.2.0",
        readiness_timeout_s=1800,
        kaito=kaito,
        sources={
            "revision": SUPPORTED_MODELS,
            "architecture": f"{MODEL_CATALOG} ({repo}); vocab_size, intermediate_size from config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 131072",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize",
            "parameters_b": "weights_gib / 2 bytes (bf16)",
            "reasoning_parser": "Kaito v0.10.0 deepseek model.go (reasoning-parser deepseek_r1)",
            "chat_template": "the tokenizer's own (Kaito's deepseek-r1-distill-*.jinja are not copied)",
            "tuning": "Kaito SupportTuning: false",
            "kaito": KAITO_TABLE,
            "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x GiB, clamped to 30 min",
        },
    )


deepseek_r1_distill_llama_8b = _distill(
    "deepseek-r1-distill-llama-8b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "6a6f4aa4197940add57724a7707d069478df56b1",
    Architecture(layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, vocab_size=128256,
                 intermediate_size=14336),
    14.96,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=16.5, disk_gib=90, safetensors_gib=14.96, bytes_per_token=131072,
                 token_limit=131072, image_tag="0.2.0"),
    "DeepSeek-R1-Distill-Llama-8B.",
)
deepseek_r1_distill_qwen_14b = _distill(
    "deepseek-r1-distill-qwen-14b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "1df8507178afcc1bef68cd8c393f61a886323761",
    Architecture(layers=48, hidden_size=5120, attention_heads=40, kv_heads=8, vocab_size=152064,
                 intermediate_size=13824),
    27.51,
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=25.7, disk_gib=120, safetensors_gib=27.51,
                 bytes_per_token=196608, token_limit=131072, image_tag="0.2.0"),
    "DeepSeek-R1-Distill-Qwen-14B.",
)

register(deepseek_r1_distill_llama_8b, deepseek_r1_distill_qwen_14b)
