"""Fixtures for the adapter-image tests: a small but real adapter directory, and registries on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry import registry_fixture

registry = registry_fixture()
htpasswd_registry = registry_fixture(auth="htpasswd")
token_registry = registry_fixture(auth="token")


def make_adapter(path: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA-shaped adapter: a peft adapter_config.json and a safetensors file of random A/B matrices (~32 KB)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer in range(2):
        for proj in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, 256), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((256, rank), dtype=np.float32)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
              "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "tiny-llama"}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    return make_adapter(tmp_path / "adapter")


def run_kaito(*args: str, stdin: str | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `kaito` CLI in a subprocess, without ambient registry credentials from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_REGISTRY_")}
    env.update(env_extra or {})
    return subprocess.run(
        # Not `python -m runtime.cli`: as __main__, its CommandError is another class than the one handlers raise.
        [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
