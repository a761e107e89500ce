"""Kaito's `inference_config.yaml` for the vLLM backend: the `vllm:` keys become engine flags.

Kaito mounts the Workspace's inference ConfigMap at `/mnt/config/inference_config.yaml`:

    max_probe_steps: 6
    kv_cache_cpu_memory_utilization: 0.5
    vllm:
      gpu-memory-utilization: 0.95
      max-model-len: 131072
      enable-chunked-prefill: true

Each `vllm:` key is a vLLM command-line flag (kebab-case; snake_case is accepted and converted) and wins
over the value we derive. Pure module: no vLLM import, so the controller and the unit tests can use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from runtime.kaito import INFERENCE_CONFIG_PATH
from runtime.kaito.configs import INFERENCE_ENGINE_SECTION, INFERENCE_KEYS

# Where Kaito mounts the inference ConfigMap.
DEFAULT_CONFIG_PATH = Path(INFERENCE_CONFIG_PATH)

# Top-level keys of Kaito's file. `transformers` (and the server's own sections) belong to the other backend;
# we accept them and leave them alone so one file can serve both runtimes.
KAITO_KEYS = INFERENCE_KEYS
OTHER_BACKEND_KEYS = frozenset({"transformers", "server", "inference"})

_FLAG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# Flags that describe where and what we serve: the user config may not move them, or our server, probes and
# Service would point at nothing. A clear error is better than a pod that never gets ready.
RESERVED_FLAGS = frozenset({"model", "host", "port", "served-model-name", "lora-modules"})

FlagValue = str | int | float | bool | list | dict | None


class InferenceConfigError(ValueError):
    """A bad inference_config.yaml; the message names the field."""


def flag_name(key: str) -> str:
    """`max_model_len` or `--max-model-len` -> `max-model-len`."""
    return key.strip().lstrip("-").replace("_", "-").lower()


@dataclass(frozen=True)
class VllmUserConfig:
    """The parsed file. `vllm` maps flag names (kebab-case, no dashes in front) to values."""

    vllm: Mapping[str, FlagValue] = field(default_factory=dict)
    """Engine flags from the `vllm:` section; they override ours."""
    max_probe_steps: int = 6
    """Kaito's max-model-len probe steps (kept for compatibility: vLLM fits the context itself)."""
    kv_cache_cpu_memory_utilization: float = 0.5
    """Kaito's share of free RAM for CPU KV offload (kept for compatibility; no LMCache here)."""
    source: str = "<defaults>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "vllm", MappingProxyType(dict(self.vllm)))


def parse_config(data: object, source: str = "<inline>", other_keys: frozenset[str] = frozenset()) -> VllmUserConfig:
    """Validate a loaded YAML document; errors name the field as `file: vllm.max-model-len: ...`.

    `other_keys`: further top-level keys the caller handles (our server's settings share the file).
    """
    if data is None:
        return VllmUserConfig(source=source)
    if not isinstance(data, Mapping):
        raise InferenceConfigError(f"{source}: the document must be a mapping, got {type(data).__name__}")
    allowed = KAITO_KEYS | OTHER_BACKEND_KEYS | other_keys
    unknown = sorted(str(k) for k in data if str(k) not in allowed and str(k).replace("-", "_") not in allowed)
    if unknown:
        raise InferenceConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(KAITO_KEYS | other_keys))}"
        )
    section = data.get(INFERENCE_ENGINE_SECTION) or {}
    if not isinstance(section, Mapping):
        raise InferenceConfigError(f"{source}: vllm must be a mapping of flag: value, got {type(section).__name__}")
    flags: dict[str, FlagValue] = {}
    for key, value in section.items():
        if not isinstance(key, str):
            raise InferenceConfigError(f"{source}: vllm.{key!r}: flag names must be strings")
        name = flag_name(key)
        if not _FLAG.match(name):
            raise InferenceConfigError(f"{source}: vllm.{key}: not a command-line flag name")
        if name in RESERVED_FLAGS:
            raise InferenceConfigError(
                f"{source}: vllm.{key}: set by the server (use the server's own option or /mnt/adapter instead)"
            )
        if not isinstance(value, str | int | float | bool | list | dict | type(None)):
            raise InferenceConfigError(f"{source}: vllm.{key}: unsupported value type {type(value).__name__}")
        if name in flags:
            raise InferenceConfigError(f"{source}: vllm.{key}: given twice (as {name})")
        flags[name] = value
    steps = data.get("max_probe_steps", 6)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InferenceConfigError(f"{source}: max_probe_steps must be a non-negative integer, got {steps!r}")
    util = data.get("kv_cache_cpu_memory_utilization", 0.5)
    if isinstance(util, bool) or not isinstance(util, int | float) or not 0 <= util <= 1:
        raise InferenceConfigError(
            f"{source}: kv_cache_cpu_memory_utilization must be a number in [0, 1], got {util!r}"
        )
    return VllmUserConfig(vllm=flags, max_probe_steps=steps, kv_cache_cpu_memory_utilization=float(util),
                          source=source)


def load_config(path: str | Path | None, other_keys: frozenset[str] = frozenset()) -> VllmUserConfig:
    """Read `path` (None: Kaito's mount point if it exists, else no user config)."""
    import yaml

    if path is None:
        if not DEFAULT_CONFIG_PATH.is_file():
            return VllmUserConfig()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InferenceConfigError(f"cannot read inference config {path}: {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InferenceConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, source=str(path), other_keys=other_keys)


def flags_to_argv(flags: Mapping[str, FlagValue]) -> list[str]:
    """Render flags as vLLM's command line: True -> `--x`, False -> `--no-x` (vLLM's boolean flags are
    BooleanOptionalAction), lists -> `--x a b`, mappings -> `--x '<json>'`, None -> left out."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        if value is True:
            argv.append(f"--{name}")
        elif value is False:
            argv.append(f"--no-{name}")
        elif isinstance(value, list):
            argv.append(f"--{name}")
            argv.extend(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)
        elif isinstance(value, dict):
            argv += [f"--{name}", json.dumps(value, separators=(",", ":"))]
        else:
            argv += [f"--{name}", str(value)]
    return argv
