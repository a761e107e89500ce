"""Google Gemma 3 4B and 27B instruct (Gemma3ForConditionalGeneration: text + vision), Gemma terms, gated.

Gemma 3 runs in bfloat16 only (Kaito pins vLLM --dtype bfloat16: float16 overflows), so it needs compute
capability >= 8.0. Architecture numbers are the text model's (config.json `text_config`; Kaito's
model_catalog.yaml has the same hiddenSize/layers/heads/kvHeads/headDim). Kaito's BytesPerToken for Gemma 3
ignores head_dim (see tests/presets and docs/sizing.md); ours is computed from head_dim.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS_NEWER


def _gemma(name: str, repo: str, revision: str, revision_source: str, arch: Architecture, weights_gib: float,
           parameters_b: float, kaito: KaitoFigures, readiness_s: int, description: str) -> Preset:
    return Preset(
        name=name,
        family="gemma",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        parameters_b=parameters_b,
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=131072,
        license="Gemma",
        redistributable=False,
        gated=True,
        transformers_params={"torch_dtype": "auto"},
        vllm_params={"dtype": "bfloat16"},
        image_tag="0.0.1",
        readiness_timeout_s=readiness_s,
        kaito=kaito,
        sources={
            "revision": revision_source,
            "architecture": f"{MODEL_CATALOG} ({repo}: hiddenSize, numHiddenLayers, heads, kvHeads, headDim); "
            "vocab_size, intermediate_size from config.json text_config",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 131072",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize (v0.10.0 gemma3/model.go)",
            "parameters_b": "model card (text + vision tower)",
            "gated": "Hugging Face gate (accept the Gemma terms); Kaito marks no downloadAuthRequired",
            "vllm_params": "Kaito gemma3/model.go gemma3RunParamsVLLM dtype bfloat16",
            "tuning": "Kaito SupportTuning: false",
            "kaito": KAITO_TABLE + "; gemma3/model.go GPUCountRequirement 1",
        },
    )


gemma_3_4b = _gemma(
    "gemma-3-4b-instruct", "google/gemma-3-4b-it", "093f9f388b31de276ce2de164bdc2081324b9767",
    "Kaito's gemma-3-4b-instruct preset README (Version: huggingface.co/google/gemma-3-4b-it/commit/093f9f3...)",
    Architecture(layers=34, hidden_size=2560, attention_heads=8, kv_heads=4, vocab_size=262208, head_dim=256,
                 intermediate_size=10240),
    8.6, 4.3,
    KaitoFigures(gpu_count=1, disk_gib=90, safetensors_gib=8.6, bytes_per_token=348160, token_limit=131072,
                 image_tag="0.0.1"),
    1800,
    "Gemma-3-4B-it (multimodal; served for text).",
)
gemma_3_27b = _gemma(
    "gemma-3-27b-instruct", "google/gemma-3-27b-it", "005ad3404e59d6023443cb575daa05336842228a",
    SUPPORTED_MODELS_NEWER,
    Architecture(layers=62, hidden_size=5376, attention_heads=32, kv_heads=16, vocab_size=262208, head_dim=128,
                 intermediate_size=21504),
    54.8, 27.4,
    KaitoFigures(gpu_count=1, disk_gib=200, safetensors_gib=54.8, bytes_per_token=666624, token_limit=131072,
                 image_tag="0.0.1"),
    2700,
    "Gemma-3-27B-it (multimodal; served for text).",
)

register(gemma_3_4b, gemma_3_27b)
