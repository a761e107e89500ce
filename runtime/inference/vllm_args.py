"""vLLM engine arguments from a preset, a sizing plan, our settings and the user's inference config.

One pure function, `engine_args(preset, plan, settings, user_config) -> argv`, whose list is exactly what
`python -m vllm.entrypoints.openai.api_server` takes: our in-process server parses it with vLLM's own parser,
and the benchmark starts bare vLLM with the same list. No vLLM import here.

Precedence, lowest first: what we derive (plan, adapters, preset parsers) < the preset's `vllm_params`
< the user's `inference_config.yaml` `vllm:` section (Kaito: "the user wins").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from presets import Preset
from runtime.inference.vllm_config import FlagValue, VllmUserConfig, flag_name, flags_to_argv
from runtime.kaito import ADAPTERS_DIR, INFERENCE_PORT, WEIGHTS_DIR
from runtime.kaito.adapters import AdapterFolderError, adapter_folders
from runtime.kaito.templates import preset_template_path
from runtime.sizing.plan import PlanLike

# Ranks vLLM accepts for --max-lora-rank (vllm/config/lora.py MaxLoRARanks); we round up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

# --dtype values vLLM accepts; a plan's storage dtype outside them (fp8, mxfp4, nf4: quantized weights) means "auto",
# which lets vLLM read the quantization from the checkpoint (Kaito does the same for quantized models).
VLLM_DTYPES = frozenset({"auto", "half", "float16", "bfloat16", "float", "float32"})

# Kaito's container paths.
DEFAULT_ADAPTERS_DIR = Path(ADAPTERS_DIR)
DEFAULT_WEIGHTS_DIR = Path(WEIGHTS_DIR)


class EngineArgsError(ValueError):
    """The preset, plan and settings do not make a valid vLLM launch; the message names the field."""


@dataclass(frozen=True)
class Adapter:
    """One LoRA adapter folder in Kaito's layout (`/mnt/adapter/<name>/adapter_config.json`)."""

    name: str
    path: Path
    rank: int
    """LoRA rank `r` from adapter_config.json."""


def find_adapters(adapters_dir: str | Path | None) -> list[Adapter]:
    """Every adapter under `adapters_dir`, sorted by name, with its rank (runtime.kaito.adapters' rule; a bad one
    raises EngineArgsError naming the file and the reason). A missing folder means no adapters."""
    try:
        return [Adapter(name=name, path=path, rank=int(config["r"]))
                for name, (path, config) in adapter_folders(adapters_dir).items()]
    except AdapterFolderError as err:
        raise EngineArgsError(str(err)) from None


def lora_rank_limit(ranks: list[int]) -> int:
    """The smallest rank vLLM accepts that holds every adapter (its default, 16, is too small for many)."""
    need = max(ranks, default=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= need:
            return allowed
    raise EngineArgsError(f"adapter rank {need} is above vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


@dataclass(frozen=True)
class VllmSettings:
    """Our own server settings that shape the engine flags."""

    model_path: str | Path = DEFAULT_WEIGHTS_DIR
    """Folder of the weights (Kaito: /workspace/weights)."""
    served_model_name: str | None = None
    """Name clients put in `model`; default: the preset name."""
    host: str = "0.0.0.0"
    port: int = INFERENCE_PORT
    """Kaito's inference port."""
    adapters: tuple[Adapter, ...] = ()
    """Adapters to serve (see find_adapters)."""
    max_num_seqs: int | None = None
    """Requests batched together; None: the plan's value, else vLLM's default."""
    chat_templates: Path | None = None
    """Folder of the preset chat templates; None: presets/chat_templates."""
    extra: Mapping[str, FlagValue] = field(default_factory=dict)
    """Further flags set by our CLI (kebab-case names), below the preset and the user in precedence."""


def derived_flags(preset: Preset, plan: PlanLike | None, settings: VllmSettings) -> dict[str, FlagValue]:
    """Flags we derive ourselves, before the preset's and the user's overrides."""
    flags: dict[str, FlagValue] = {
        "model": str(settings.model_path),
        "served-model-name": settings.served_model_name or preset.name,
        "host": settings.host,
        "port": settings.port,
    }
    if plan is not None:
        tp, pp = int(plan.tensor_parallel_size), int(plan.pipeline_parallel_size)
        if tp < 1 or pp < 1:
            raise EngineArgsError(f"plan: tensor_parallel_size {tp} and pipeline_parallel_size {pp} must be >= 1")
        if tp > 1 and not preset.tensor_parallel:
            raise EngineArgsError(
                f"plan: tensor_parallel_size {tp} but preset {preset.name} does not allow tensor parallelism"
            )
        if pp > 1 and not preset.distributed:
            raise EngineArgsError(
                f"plan: pipeline_parallel_size {pp} (several nodes) but preset {preset.name} "
                "does not support distributed inference"
            )
        flags["tensor-parallel-size"] = tp
        if pp > 1:
            flags["pipeline-parallel-size"] = pp
            flags["distributed-executor-backend"] = "ray"
        dp = int(getattr(plan, "data_parallel_size", 1) or 1)
        if dp > 1:  # a small model replicated over the node's GPUs (Kaito HEAD's configureParallelism)
            flags["data-parallel-size"] = dp
        flags["max-model-len"] = int(plan.max_model_len)
        flags["gpu-memory-utilization"] = float(plan.gpu_memory_utilization)
        dtype = str(plan.dtype)
        flags["dtype"] = dtype if dtype in VLLM_DTYPES else "auto"
    else:
        flags["max-model-len"] = preset.context_length
    max_num_seqs = settings.max_num_seqs or getattr(plan, "max_num_seqs", None)
    if max_num_seqs:
        flags["max-num-seqs"] = int(max_num_seqs)
    if preset.chat_template:
        path = Path(settings.chat_templates) / preset.chat_template if settings.chat_templates else (
            preset_template_path(preset))
        flags["chat-template"] = str(path)
    if preset.tool_call_parser:
        flags["tool-call-parser"] = preset.tool_call_parser
        flags["enable-auto-tool-choice"] = True
    if preset.reasoning_parser:
        flags["reasoning-parser"] = preset.reasoning_parser
    if preset.trust_remote_code:
        flags["trust-remote-code"] = True
    if settings.adapters:
        if not preset.lora_serving:
            names = ", ".join(a.name for a in settings.adapters)
            raise EngineArgsError(f"adapters ({names}): preset {preset.name} does not allow LoRA serving")
        flags["enable-lora"] = True
        flags["max-loras"] = len(settings.adapters)
        flags["max-lora-rank"] = lora_rank_limit([a.rank for a in settings.adapters])
        flags["lora-modules"] = [f"{a.name}={a.path}" for a in settings.adapters]
    return flags


def merged_flags(
    preset: Preset, plan: PlanLike | None, settings: VllmSettings, user: VllmUserConfig | None = None
) -> dict[str, FlagValue]:
    """Derived flags, then settings.extra, then the preset's vllm_params, then the user's: later wins."""
    flags = derived_flags(preset, plan, settings)
    for layer in (settings.extra, preset.vllm_params, user.vllm if user else {}):
        for key, value in layer.items():
            name = flag_name(key)
            flags.pop(name, None)  # re-insert so the winning value sits where it was set
            flags[name] = value
    return flags


def engine_args(
    preset: Preset, plan: PlanLike | None, settings: VllmSettings, user: VllmUserConfig | None = None
) -> list[str]:
    """The vLLM OpenAI server's argv (without the program name) for this preset, plan and settings."""
    return flags_to_argv(merged_flags(preset, plan, settings, user))
