"""TII Falcon 7B/40B, base and instruct (FalconForCausalLM, Apache-2.0).

falcon-7b has 71 attention heads and one KV head (multi-query): no tensor parallelism, and Kaito disallows LoRA
serving on it (DisallowLoRA). falcon-40b uses grouped KV (8 heads). The models ship no chat template: all four
use our falcon-instruct.jinja, as Kaito does.

Numbers: revisions from Kaito's supported_models.yaml; architecture from each config.json (hidden_size,
n_layer, n_head, multi_query / num_kv_heads, vocab_size) -- Kaito's catalog has no Falcon entries; sizes and
GPU figures from kaito-reference.md §1.3.
"""

from presets import register
from presets._schema import FALCON_TARGET_MODULES, Architecture, KaitoFigures, Preset, TuningSupport
from presets._sources import KAITO_TABLE, SUPPORTED_MODELS

FALCON_7B = Architecture(layers=32, hidden_size=4544, attention_heads=71, kv_heads=1, vocab_size=65024,
                         intermediate_size=4 * 4544, attention="mqa")
FALCON_40B = Architecture(layers=60, hidden_size=8192, attention_heads=128, kv_heads=8, vocab_size=65024,
                          intermediate_size=4 * 8192)


def _falcon(name: str, revision: str, arch: Architecture, weights_gib: float, kaito: KaitoFigures,
            tunable: bool, small: bool, description: str) -> Preset:
    repo = "tiiuae/" + name
    sources = {
        "revision": SUPPORTED_MODELS,
        "architecture": f"config.json of {repo} (hidden_size, n_layer, n_head, "
        + ("multi_query=true -> 1 KV head" if small else "num_kv_heads=8, new_decoder_architecture")
        + ", vocab_size; ffn is 4 x hidden)",
        "context_length": "Kaito ModelTokenLimit 2048 (v0.10.0 model.go)",
        "weights_gib": f"{KAITO_TABLE}: TotalSafeTensorFileSize",
        "parameters_b": "weights_gib / 2 bytes (bf16)",
        "kaito": KAITO_TABLE,
        "chat_template": "Kaito's transformers run params use falcon-instruct.jinja; ours is written from the "
        "'User: ... / Falcon: ...' format of the Falcon-instruct model card",
        "readiness_timeout_s": "Kaito v0.10.0 ReadinessTimeout 30m",
        "tuning": "Kaito SupportTuning (v0.10.0); modules of transformers' modeling_falcon",
    }
    if small:
        sources["tensor_parallel"] = "Kaito DisableTensorParallelism: 71 attention heads (prime) do not split"
        sources["lora_serving"] = "Kaito DisallowLoRA on falcon-7b(-instruct)"
    return Preset(
        name=name,
        family="falcon",
        hf_repo=repo,
        revision=revision,
        description=description,
        architecture=arch,
        parameters_b=round(weights_gib * 1024**3 / 2 / 1e9, 2),
        weight_dtype="bfloat16",
        weights_gib=weights_gib,
        context_length=2048,
        license="Apache-2.0",
        redistributable=True,
        chat_template="falcon-instruct.jinja",
        transformers_params={"torch_dtype": "bfloat16"},
        tensor_parallel=not small,
        lora_serving=not small,
        tuning=TuningSupport(target_modules=FALCON_TARGET_MODULES) if tunable else None,
        image_tag="0.2.0",
        readiness_timeout_s=1800,
        kaito=kaito,
        sources=sources,
    )


_7B_FIGURES = dict(gpu_count=1, total_gpu_memory_gib=14, disk_gib=90, safetensors_gib=13.44, bytes_per_token=8192,
                   token_limit=2048, image_tag="0.2.0")

falcon_7b = _falcon("falcon-7b", "ec89142b67d748a1865ea4451372db8313ada0d8", FALCON_7B, 13.44,
                    KaitoFigures(**_7B_FIGURES, tuning_total_gpu_memory_gib=16, tuning_per_gpu_memory_gib=16),
                    tunable=True, small=True, description="Falcon-7B base model.")
falcon_7b_instruct = _falcon("falcon-7b-instruct", "8782b5c5d8c9290412416618f36a133653e85285", FALCON_7B, 13.44,
                             KaitoFigures(**_7B_FIGURES), tunable=False, small=True,
                             description="Falcon-7B-Instruct.")
falcon_40b = _falcon("falcon-40b", "4a70170c215b36a3cce4b4253f6d0612bb7d4146", FALCON_40B, 77.9,
                     KaitoFigures(gpu_count=2, total_gpu_memory_gib=90, disk_gib=280, tuning_total_gpu_memory_gib=90,
                                  tuning_per_gpu_memory_gib=16, safetensors_gib=77.9, bytes_per_token=8192,
                                  token_limit=2048, image_tag="0.2.0"),
                     tunable=True, small=False, description="Falcon-40B base model.")
falcon_40b_instruct = _falcon("falcon-40b-instruct", "ecb78d97ac356d098e79f0db222c9ce7c5d9ee5f", FALCON_40B, 77.9,
                              KaitoFigures(gpu_count=2, total_gpu_memory_gib=90, disk_gib=280, safetensors_gib=77.9,
                                           bytes_per_token=1966080, token_limit=2048, image_tag="0.2.0"),
                              tunable=False, small=False, description="Falcon-40B-Instruct.")

register(falcon_7b, falcon_7b_instruct, falcon_40b, falcon_40b_instruct)
