"""Meta Llama 3.1 8B and 3.3 70B Instruct (LlamaForCausalLM): gated (HF token), multi-node capable, tool
calling with vLLM's `llama3_json` parser.

Numbers: architecture from Kaito's model_catalog.yaml plus vocab/intermediate from config.json; sizes, bytes per
token and GPU figures from kaito-reference.md §1.3. Revisions: llama-3.1-8b from Kaito's supported_models.yaml;
Kaito's stored tables give no commit for llama-3.3-70b, so its revision is the one public projects pin
(`huggingface.co/meta-llama/Llama-3.3-70B-Instruct/tree/6f6073b...`), see sources.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS, SUPPORTED_MODELS_NEWER

LLAMA_3_1_8B = Architecture(layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, vocab_size=128256,
                            intermediate_size=14336)
LLAMA_3_3_70B = Architecture(layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, vocab_size=128256,
                             intermediate_size=28672)


def _llama(name: str, repo: str, revision: str, arch: Architecture, weights_gib: float, license: str,
           kaito: KaitoFigures, readiness_s: int, extra_sources: dict, description: str) -> Preset:
    return Preset(
        name=name,
        family="llama",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        parameters_b=round(weights_gib * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=131072,
        license=license,
        redistributable=False,
        gated=True,
        tool_call_parser="llama3_json",
        transformers_params={"torch_dtype": "bfloat16"},
        distributed=True,
        image_tag=kaito.image_tag or "0.2.0",
        readiness_timeout_s=readiness_s,
        kaito=kaito,
        sources={
            "architecture": f"{MODEL_CATALOG} ({repo}); vocab_size, intermediate_size from config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 131072",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize",
            "parameters_b": "weights_gib / 2 bytes (bf16)",
            "gated": "Kaito HEAD supported_models.yaml downloadAuthRequired: true (Llama community licence)",
            "distributed": "Kaito v0.10.0 SupportDistributedInference: true",
            "tool_call_parser": "Kaito v0.10.0 llama3 model.go (llama3_json with tool-chat-llama3.1-json.jinja)",
            "chat_template": "the tokenizer's own (it renders tools); our llama-3-instruct.jinja is the plain "
            "template Kaito's transformers runtime uses, kept for custom Llama-3 presets",
            "tuning": "Kaito SupportTuning: false",
            "vllm_params": "Kaito v0.10.0 adds attention-backend TRITON_ATTN; we leave vLLM's default backend",
            "kaito": KAITO_TABLE,
            **extra_sources,
        },
    )


llama_3_1_8b = _llama(
    "llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "0e9e39f249a16976918f6564b8830bc894c89659",
    LLAMA_3_1_8B, 14.96, "llama3.1",
    KaitoFigures(gpu_count=1, total_gpu_memory_gib=22, disk_gib=110, safetensors_gib=14.96, bytes_per_token=131072,
                 token_limit=131072, image_tag="0.2.0"),
    1800,
    {"revision": SUPPORTED_MODELS,
     "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x 14.96 GiB = 19.5 min, clamped to 30 min"},
    "Llama-3.1-8B-Instruct, 128k context.",
)
llama_3_3_70b = _llama(
    "llama-3.3-70b-instruct", "meta-llama/Llama-3.3-70B-Instruct", "6f6073b423013f6a7d4d9f39144961bfbfbc386b",
    LLAMA_3_3_70B, 131.42, "llama3.3",
    KaitoFigures(gpu_count=4, total_gpu_memory_gib=320, per_gpu_memory_gib=80, disk_gib=220, safetensors_gib=131.42,
                 bytes_per_token=327680, token_limit=131072, image_tag="0.0.1"),
    900 + int(18 * 131.42),
    {"revision": SUPPORTED_MODELS_NEWER,
     "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x 131.42 GiB = 54.4 min"},
    "Llama-3.3-70B-Instruct, 128k context; 4 x 80 GB GPUs or several nodes.",
)

register(llama_3_1_8b, llama_3_3_70b)
