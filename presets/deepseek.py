"""DeepSeek (MIT): the R1 distills on Llama-3.1-8B and Qwen2.5-14B (vLLM `deepseek_r1` reasoning parser), and
the full 671B mixture-of-experts models DeepSeek-R1-0528 and DeepSeek-V3-0324 (DeepseekV3ForCausalLM, FP8
weights, multi-head latent attention, multi-node; `deepseek_v3` tool parser).

Numbers: revisions from Kaito's supported_models.yaml; architecture from Kaito's model_catalog.yaml plus
vocab/intermediate from config.json; sizes and GPU figures from kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import Architecture, KaitoFigures, Preset
from presets._sources import KAITO_TABLE, MODEL_CATALOG, SUPPORTED_MODELS, SUPPORTED_MODELS_NEWER


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


# DeepseekV3ForCausalLM config.json (identical for R1-0528 and V3-0324). MLA caches one compressed latent
# (kv_lora_rank) plus the shared rotary key (qk_rope_head_dim) per layer: (512 + 64) x 61 x 2 B = 70272 B/token.
# head_dim 128 is qk_nope_head_dim = v_head_dim (o_proj takes 128 heads x 128); num_key_value_heads is 128.
DEEPSEEK_V3 = Architecture(layers=61, hidden_size=7168, attention_heads=128, kv_heads=128, vocab_size=129280,
                           head_dim=128, intermediate_size=18432, attention="mla", kv_lora_rank=512,
                           qk_rope_head_dim=64)
DEEPSEEK_V3_WEIGHTS_GIB = 641.3
# Kaito HEAD formula 15 min + 18 s x GiB, clamped to 180 min: 900 + 18 x 641.3 = 12443 s -> 10800 s.
DEEPSEEK_V3_READINESS_S = min(900 + int(18 * DEEPSEEK_V3_WEIGHTS_GIB), 3 * 3600)


def _deepseek_v3(name: str, repo: str, revision: str, reasoning_parser: str | None, description: str) -> Preset:
    return Preset(
        name=name,
        family="deepseek",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=DEEPSEEK_V3,
        parameters_b=671.0,
        weight_dtype="fp8",
        weights_gib=DEEPSEEK_V3_WEIGHTS_GIB,
        context_length=163840,
        license="MIT",
        redistributable=True,
        tool_call_parser="deepseek_v3",
        reasoning_parser=reasoning_parser,
        # The checkpoint's quantization_config (fp8, block 128x128) picks the weight format; compute is bf16.
        transformers_params={"torch_dtype": "auto"},
        distributed=True,
        image_tag="0.0.1",
        readiness_timeout_s=DEEPSEEK_V3_READINESS_S,
        kaito=KaitoFigures(gpu_count=1, total_gpu_memory_gib=960, disk_gib=800,
                           safetensors_gib=DEEPSEEK_V3_WEIGHTS_GIB, bytes_per_token=70272, token_limit=163840,
                           image_tag="0.0.1"),
        sources={
            "revision": f"{SUPPORTED_MODELS_NEWER}: {repo}/commit/{revision}",
            "architecture": f"{MODEL_CATALOG} ({repo}: hiddenSize, numHiddenLayers, heads, kvHeads, kvLoraRank, "
            "qkRopeHeadDim); vocab_size, intermediate_size, qk_nope_head_dim/v_head_dim 128 from config.json",
            "context_length": f"{MODEL_CATALOG} modelTokenLimit 163840",
            "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize 641.3Gi (fp8)",
            "parameters_b": "model card: 671B total parameters (37B activated), FP8 weights",
            "weight_dtype": "config.json quantization_config: fp8 (e4m3), weight_block_size 128x128",
            "tool_call_parser": "Kaito v0.10.0 deepseek model.go / HEAD generator map deepseek-v3 -> deepseek_v3",
            "reasoning_parser": "Kaito v0.10.0: deepseek_r1 for R1-0528, none for V3-0324",
            "chat_template": "the tokenizer's own; Kaito passes vLLM's tool-chat-deepseekr1/-deepseekv3.jinja, "
            "not copied here (see docs/presets.md)",
            "distributed": "Kaito v0.10.0 SupportDistributedInference: true",
            "tuning": "Kaito SupportTuning: false",
            "kaito": KAITO_TABLE + "; v0.6.2 lists GPUCountRequirement 1 / 960Gi, kept as published",
            "image_tag": "Kaito HEAD supported_models.yaml tag 0.0.1 (downloadAtRuntime: true)",
            "readiness_timeout_s": "Kaito HEAD formula 15 min + 18 s x 641.3 GiB = 207 min, clamped to 180 min",
        },
    )


deepseek_r1_0528 = _deepseek_v3(
    "deepseek-r1-0528", "deepseek-ai/DeepSeek-R1-0528", "4236a6af538feda4548eca9ab308586007567f52", "deepseek_r1",
    "DeepSeek-R1-0528: 671B MoE reasoning model (FP8), 160k context; several 8-GPU nodes or many 2-GPU nodes.",
)
deepseek_v3_0324 = _deepseek_v3(
    "deepseek-v3-0324", "deepseek-ai/DeepSeek-V3-0324", "e9b33add76883f293d6bf61f6bd89b497e80e335", None,
    "DeepSeek-V3-0324: 671B MoE chat model (FP8), 160k context, tool calling; multi-node.",
)

register(deepseek_r1_distill_llama_8b, deepseek_r1_distill_qwen_14b, deepseek_r1_0528, deepseek_v3_0324)
