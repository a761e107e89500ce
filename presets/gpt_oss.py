"""OpenAI gpt-oss-20b (GptOssForCausalLM, Apache-2.0): a 21B mixture-of-experts (3.6B active) with MXFP4 expert
weights; reasoning via vLLM's `openai_gptoss` parser and tool calls via `openai`.

Numbers: architecture from Kaito's model_catalog.yaml (hiddenSize 2880, 24 layers, 64 heads, 8 KV heads, headDim
64) plus vocab/intermediate from config.json; size and token limit from kaito-reference.md §1.3. Kaito's
BytesPerToken (34560) uses hidden/heads = 45 instead of head_dim 64; ours uses head_dim.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS_NEWER

gpt_oss_20b = Preset(
    name="gpt-oss-20b",
    family="gpt_oss",
    hf_repo="openai/gpt-oss-20b",
    revision="db6852caddef0cf0c1f729034ed700c84eab376e",
    description="gpt-oss-20b: MoE reasoning model, fits one 24 GB GPU.",
    architecture=Architecture(layers=24, hidden_size=2880, attention_heads=64, kv_heads=8, vocab_size=201088,
                              head_dim=64, intermediate_size=2880),
    parameters_b=21.0,
    weight_dtype="mxfp4",
    weights_gib=16.0,
    context_length=131072,
    license="Apache-2.0",
    redistributable=True,
    tool_call_parser="openai",
    reasoning_parser="openai_gptoss",
    transformers_params={"torch_dtype": "auto"},
    image_tag="0.0.2",
    readiness_timeout_s=1800,
    kaito=KaitoFigures(disk_gib=110, safetensors_gib=16.0, bytes_per_token=34560, token_limit=131072,
                       image_tag="0.0.2"),
    sources={
        "revision": SUPPORTED_MODELS_NEWER,
        "architecture": f"{MODEL_CATALOG} (openai/gpt-oss-20b); vocab_size, intermediate_size from config.json",
        "context_length": f"{MODEL_CATALOG} modelTokenLimit 131072",
        "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize 16Gi (v0.10.0); HEAD's 25.63Gi also counts "
        "the original/ checkpoint",
        "parameters_b": "model card: 21B parameters, 3.6B active",
        "tool_call_parser": "Kaito HEAD generator toolCallParserArchMap GptOss -> openai",
        "reasoning_parser": "Kaito HEAD generator reasoningParserArchMap GptOss -> openai_gptoss",
        "tuning": "Kaito SupportTuning: false (MoE experts are not LoRA-able Linear layers)",
        "kaito": KAITO_TABLE,
        "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x 16 GiB, clamped to 30 min",
    },
)

register(gpt_oss_20b)
