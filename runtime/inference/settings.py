"""Server settings: one typed class, filled from flags > environment > `--config` YAML > preset defaults.

Only the standard library, pydantic and pyyaml are imported here, so the CLI can build settings without torch.

Environment variables are `KAITO_<FIELD>` (e.g. `KAITO_PORT=8000`); the API key is also read from the
conventional `API_KEY` and `VLLM_API_KEY`. A YAML config file holds field names as keys, snake_case or kebab-case
(`max-queued-requests: 8`), like `vllm serve --config`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from runtime.inference.vllm_config import KAITO_KEYS, OTHER_BACKEND_KEYS  # standard library only
from runtime.kaito import ADAPTERS_DIR, INFERENCE_PORT, WEIGHTS_DIR

log = logging.getLogger(__name__)

DEFAULT_PRESET = "smollm2-135m-instruct"

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""A few MB: a full 128k-token context of text in JSON is about 0.5-1 MB (TGI's payload limit is 2 MB)."""

ENV_PREFIX = "KAITO_"
API_KEY_ENV_ALIASES = ("API_KEY", "VLLM_API_KEY")


class SettingsError(ValueError):
    """Bad settings: the message names the field and where the value came from."""


class ServerSettings(BaseModel):
    """Everything the inference server needs; each field has a default (see `resolve_settings` for precedence)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: str = Field(DEFAULT_PRESET, description="Preset name (see `kaito presets list`).")
    model_path: str | None = Field(
        None,
        description="Weights folder (save_pretrained layout). Default: the local builder's cache for local presets, "
        "else /workspace/weights if it exists (a preset image), else the preset's HF repo at its pinned revision.",
    )
    served_model_name: str | None = Field(None, description="Name clients put in `model`; default: the preset name.")
    host: str = Field("0.0.0.0", description="Address to bind.")
    port: int = Field(INFERENCE_PORT, ge=1, le=65535, description=f"Port to bind (Kaito's is {INFERENCE_PORT}).")
    adapters_dir: str = Field(
        ADAPTERS_DIR, description="Every <dir>/<name>/ with adapter_config.json + adapter_model.safetensors is "
        "served as model <name>."
    )
    adapter_combination: Literal["svd", "cat", "linear"] = Field(
        "svd", description="How adapters are combined into `combined_adapter` (peft add_weighted_adapter; Kaito: svd)."
    )
    api_key: SecretStr | None = Field(None, description="If set, every endpoint but health and metrics needs "
                                      "`Authorization: Bearer <key>`.")
    runtime: Literal["transformers", "vllm"] = Field("transformers", description="Inference backend.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None, description="Weights dtype; default: the preset's transformers_params torch_dtype, else auto."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu.")
    quantization: Literal["bnb-4bit"] | None = Field(
        None, description="Load the base in 4-bit NF4 with bitsandbytes (serves QLoRA adapters on their own base)."
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Context length (prompt + generated tokens); default: the model's "
        "max_position_embeddings."
    )
    max_batch_size: int = Field(16, ge=1, description="Most requests decoded together in one batch.")
    max_queued_requests: int = Field(
        64, ge=0, description="Requests allowed to wait beyond max_batch_size; past that the server answers 429."
    )
    page_size: int = Field(64, ge=16, description="Tokens per KV-cache block (continuous batching paged cache).")
    num_blocks: int | None = Field(
        None, ge=1, description="KV-cache blocks; default: one full context plus 4 blocks per batch slot."
    )
    max_batch_tokens: int | None = Field(
        None, ge=16, description="Most tokens in one forward pass (prefill chunking); default 512 on CPU, auto on GPU."
    )
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when an OpenAI request gives none.")
    chat_template: str | None = Field(None, description="Chat template file, or inline Jinja, replacing the "
                                      "tokenizer's own.")
    trust_remote_code: bool | None = Field(None, description="Default: the preset's trust_remote_code.")
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads on CPU; default: torch's own.")
    pipeline: Literal["text-generation", "conversational"] = Field(
        "text-generation", description="Kaito's /chat mode: which field a request must carry (prompt or messages)."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with 429.")
    max_request_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES, ge=1024, description="Largest request body accepted; a larger one gets 413 before "
        "it is read."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    # --- derived values (no I/O beyond a few stat calls) ---

    def resolved_name(self) -> str:
        return self.served_model_name or self.preset

    def cpu_num_blocks(self, max_model_len: int) -> int:
        """Default block count: one request at full context, plus room for a full batch of short requests."""
        return self.num_blocks or math.ceil(max_model_len / self.page_size) + 4 * self.max_batch_size


def model_location(model_path: str | None, preset, weights_dir: str | Path = WEIGHTS_DIR
                   ) -> tuple[str, dict[str, Any]]:
    """Where both backends read weights: the flag, else the local builder's cache, else a preset image's baked
    weights, else the preset's hub repo at its pinned revision (with the extra loading arguments)."""
    from runtime.models import NoWeights, local_weights

    try:
        folder = local_weights(preset, model_path, (weights_dir,))
    except NoWeights as err:
        raise SettingsError(f"model_path: {err}") from None
    if folder is not None:
        return str(folder), {}
    return preset.hf_repo, {"revision": preset.revision}


# Sections of Kaito's inference_config.yaml this backend does not read (vLLM's, and the other runtimes').
NOT_OURS_KEYS = KAITO_KEYS | OTHER_BACKEND_KEYS


def _normalise_keys(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = set(ServerSettings.model_fields)
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise SettingsError(f"{source}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}")
        out[name] = value
    return out


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings given as KAITO_<FIELD> variables (and API_KEY / VLLM_API_KEY for the key)."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for alias in API_KEY_ENV_ALIASES:
        if env.get(alias):
            out["api_key"] = env[alias]
    for name in ServerSettings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            out[name] = value
    return out


def from_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML mapping whose keys are field names (snake or kebab case)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"--config: {p} is not a file")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"--config: {p} must hold a mapping of setting: value, got {type(data).__name__}")
    # Kaito's inference_config.yaml also carries vLLM's keys: the transformers backend has no use for them.
    ignored = sorted(k for k in data if str(k).replace("-", "_") in NOT_OURS_KEYS)
    if ignored:
        log.info("config file %s: ignoring keys %s, which other backends read", p, ", ".join(map(str, ignored)))
    return _normalise_keys({k: v for k, v in data.items() if k not in ignored}, f"config file {p}")


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ServerSettings:
    """Merge the sources, highest first: flags (None = not given), environment, config file. Preset defaults
    (model path, dtype, context) are applied later, when the backend loads the model."""
    merged: dict[str, Any] = {}
    layers = [
        ("config file", from_config_file(config_file) if config_file else {}),
        ("environment", from_environment(environ)),
        ("flags", _normalise_keys({k: v for k, v in (flags or {}).items() if v is not None}, "flags")),
    ]
    origin: dict[str, str] = {}
    for source, values in layers:
        merged.update(values)
        origin.update(dict.fromkeys(values, source))
    try:
        return ServerSettings(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"setting {field!r} (from {origin.get(field, 'defaults')}): {first['msg']}") from None
