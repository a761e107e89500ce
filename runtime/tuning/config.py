"""Kaito's `training_config.yaml` as typed models, with Kaito's qlora and lora defaults built in.

The file has one top-level key, `training_config`, holding six sections (kaito-reference.md §3):
ModelConfig, QuantizationConfig, LoraConfig, TrainingArguments, DatasetConfig, DataCollator. The sections we
own are closed (an unknown key is an error naming it); LoraConfig and TrainingArguments pass through to
peft.LoraConfig and trl.SFTConfig, whose keys are checked against those classes when training starts.

Precedence: the method's built-in defaults, then the file, then command-line flags.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runtime.kaito import KAITO_TRAINER_WEIGHTS_DIR, MOUNT_ROOT, TRAINING_CONFIG_PATH
from runtime.kaito.configs import (  # noqa: F401 (CHECKPOINT*, default_document: the trainer's public defaults)
    CHECKPOINT_EVERY_STEPS,
    CHECKPOINTS_KEPT,
    DEFAULTS,
    METHODS,
    SECTIONS,
    default_document,
)

Method = Literal["lora", "qlora"]


class ConfigError(ValueError):
    """A bad training config; the message names the offending field (`Section.key`)."""


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfigSection(_Closed):
    """How the base model is loaded (Kaito's cli.ModelConfig)."""

    pretrained_model_name_or_path: str = KAITO_TRAINER_WEIGHTS_DIR
    """Folder of the base weights. Local presets ignore it (their weights are built on this machine)."""
    local_files_only: bool = True
    revision: str = "main"
    """Accepted for compatibility; the adapter's metadata records the preset's pinned revision."""
    trust_remote_code: bool = False
    """Only allowed when the preset needs it."""
    torch_dtype: Literal["bfloat16", "float16", "float32", "auto"] | None = None
    """None: the trainer picks for the device it runs on (`resolve_dtypes`). bfloat16 on a GPU without it
    (compute capability below 8.0) becomes float16."""
    device_map: str = "auto"
    """`auto` means the first GPU, or the CPU when there is none."""
    chat_template: str | None = None
    """A Jinja chat template (or a path to one) replacing the tokenizer's own."""
    cache_dir: str | None = None
    """Accepted for compatibility with Kaito's files; weights are always read from a local folder."""
    force_download: bool = False
    """Accepted for compatibility (no hub downloads here)."""
    proxies: dict[str, str] | None = None
    """Accepted for compatibility (no hub downloads here)."""
    token: str | None = Field(default=None, repr=False)
    """Hub token; never logged."""


class QuantizationConfigSection(_Closed):
    """bitsandbytes quantization of the base model (QLoRA iff 4-bit or 8-bit is on)."""

    quant_method: Literal["bitsandbytes"] = "bitsandbytes"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: list[str] | None = None
    llm_int8_has_fp16_weight: bool = False
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] | None = None
    """As ModelConfig.torch_dtype: None picks for the device."""
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "fp4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_quant_storage: str | None = None

    @model_validator(mode="after")
    def _one_width(self) -> QuantizationConfigSection:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("QuantizationConfig.load_in_4bit and QuantizationConfig.load_in_8bit cannot both be true")
        return self

    @property
    def enabled(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit


class DatasetConfigSection(_Closed):
    """Where the training data is and how it is read (Kaito's cli.DatasetConfig, plus our data-quality knobs)."""

    dataset_path: str | None = None
    """A file, folder or http(s) URL. Relative paths are under the output root (Kaito: /mnt)."""
    dataset_extension: Literal["json", "jsonl", "csv", "parquet", "arrow"] | None = None
    """Forces the file format; by default it comes from the file name."""
    shuffle_dataset: bool = True
    shuffle_seed: int = 42
    context_column: str | None = None
    """With response_column: a prompt/response pair of columns (becomes a user and an assistant message)."""
    response_column: str = "text"
    messages_column: str | None = None
    """Column holding OpenAI-style messages, when it is not called `messages`."""
    train_test_split: float = Field(default=1.0, gt=0.0, le=1.0)
    """Fraction of rows used for training; the rest is the eval split (1 = no eval)."""
    max_bad_rows_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    """Rows that cannot be turned into a chat are dropped and reported; above this fraction the run fails."""
    max_download_bytes: int = Field(default=20 * 1024**3, gt=0)
    """Refuse URLs whose body is larger than this."""
    download_retries: int = Field(default=3, ge=0)


class DataCollatorSection(_Closed):
    """Kaito's ExtDataCollator. `mlm` and `mlm_probability` are accepted for compatibility with Kaito's files and
    not used: the trainer trains a causal LM (labels from the chat mask). `pad_to_multiple_of` is used."""

    mlm: bool = False
    mlm_probability: float = 0.15
    pad_to_multiple_of: int | None = None


class TrainingConfig(BaseModel):
    """The whole `training_config` mapping, after defaults and overrides."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "qlora"
    ModelConfig: ModelConfigSection = Field(default_factory=lambda: ModelConfigSection())
    QuantizationConfig: QuantizationConfigSection = Field(default_factory=lambda: QuantizationConfigSection())
    LoraConfig: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of peft.LoraConfig."""
    TrainingArguments: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of trl.SFTConfig (a transformers.TrainingArguments)."""
    DatasetConfig: DatasetConfigSection = Field(default_factory=lambda: DatasetConfigSection())
    DataCollator: DataCollatorSection = Field(default_factory=lambda: DataCollatorSection())

    @model_validator(mode="after")
    def _method_matches_quantization(self) -> TrainingConfig:
        if self.method == "lora" and self.QuantizationConfig.enabled:
            raise ValueError("QuantizationConfig: method 'lora' must not quantize; set load_in_4bit/load_in_8bit "
                             "to false or use method 'qlora'")
        if self.method == "qlora" and not self.QuantizationConfig.enabled:
            raise ValueError("QuantizationConfig: method 'qlora' needs load_in_4bit or load_in_8bit")
        return self

    @property
    def output_dir(self) -> Path:
        return Path(self.TrainingArguments["output_dir"])


def resolve_dtypes(config: TrainingConfig, *, gpu: bool, native_bf16: bool, device: str) -> tuple[str, bool] | None:
    """Fix ModelConfig.torch_dtype and (when quantizing) bnb_4bit_compute_dtype for the device. Returns the one
    line saying what was picked and why, and whether an asked value was overridden; None when the config already
    holds what runs there.

    Unset: bfloat16 where the device computes it natively, else float16 on a GPU and float32 on a CPU (a CPU
    without AVX512_BF16/AMX emulates bf16: 6-8x slower than fp32, measured). bfloat16 asked on a GPU without it
    (V100, T4: compute capability below 8.0) becomes float16, so Kaito's bf16 templates still run there.
    """
    fields = [(config.ModelConfig, "torch_dtype")]
    if config.QuantizationConfig.enabled:
        fields.append((config.QuantizationConfig, "bnb_4bit_compute_dtype"))
    fast = "bfloat16" if native_bf16 else ("float16" if gpu else "float32")
    changes, overridden = [], False
    for section, name in fields:
        asked = getattr(section, name)
        if asked is None:
            picked, why = fast, "not set"
        elif asked == "bfloat16" and gpu and not native_bf16:
            picked, why, overridden = "float16", "bfloat16 asked, which this GPU lacks", True
        else:
            continue
        setattr(section, name, picked)
        changes.append(f"{type(section).__name__.removesuffix('Section')}.{name} {picked} ({why})")
    if not changes:
        return None
    return f"dtype for {device}: " + "; ".join(changes), overridden


def output_root() -> Path:
    """Output dirs from a config file must stay under this folder (Kaito: /mnt); `KAITO_OUTPUT_ROOT` moves it."""
    return Path(os.environ.get("KAITO_OUTPUT_ROOT") or MOUNT_ROOT).resolve()


def default_config_path() -> Path | None:
    """`$YAML_FILE_PATH`, else Kaito's mounted ConfigMap when present, else None (built-in defaults)."""
    env = os.environ.get("YAML_FILE_PATH")
    if env:
        return Path(env)
    path = Path(TRAINING_CONFIG_PATH)
    return path if path.exists() else None


def read_file(path: Path) -> dict[str, Any]:
    """The `training_config` mapping of a YAML file; unknown sections are rejected by name."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or "training_config" not in doc:
        raise ConfigError(f"config file {path}: the top-level key must be 'training_config'")
    extra = sorted(set(doc) - {"training_config"})
    if extra:
        raise ConfigError(f"config file {path}: unknown top-level key(s) {extra}; only 'training_config' is allowed")
    body = doc["training_config"] or {}
    if not isinstance(body, dict):
        raise ConfigError("training_config must be a mapping of sections")
    return body


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _infer_method(body: dict[str, Any]) -> str:
    quant = body.get("QuantizationConfig") or {}
    if isinstance(quant, dict) and (quant.get("load_in_4bit") is False and not quant.get("load_in_8bit")):
        return "lora"
    return "qlora"


def build_config(body: dict[str, Any] | None = None, method: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None, output_dir: str | None = None) -> TrainingConfig:
    """Defaults for `method`, then the file's sections `body`, then `overrides` (from flags); validated.

    Without an explicit method, a file that switches quantization off means lora, anything else qlora.
    `output_dir` is one the user typed (`--output-dir`): their decision, relative to the current directory and
    not held to the output root, which guards only paths that come from a config file or a Workspace.
    """
    body = body or {}
    unknown = sorted(set(body) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"training_config: unknown section(s) {unknown}; known sections: {', '.join(SECTIONS)}")
    for name, section in body.items():
        if section is not None and not isinstance(section, dict):
            raise ConfigError(f"training_config.{name} must be a mapping, got {type(section).__name__}")
    body = {k: v or {} for k, v in body.items()}
    method = method or _infer_method(body)
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not supported; use one of {', '.join(METHODS)}")
    merged = _merge(_merge(DEFAULTS[method], body), overrides or {})
    try:
        config = TrainingConfig(method=method, **merged)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    if output_dir is not None:
        config.TrainingArguments["output_dir"] = str(Path(output_dir).resolve())
    else:
        _check_output_dir(config)
    return config


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid training config: " + "; ".join(parts)


def _check_output_dir(config: TrainingConfig) -> None:
    root = output_root()
    raw = config.TrainingArguments.get("output_dir") or str(root / "results")
    path = Path(raw)
    if not path.is_absolute():
        path = root / path
    path = path.resolve()
    if path != root and root not in path.parents:
        raise ConfigError(f"TrainingArguments.output_dir {raw!r} is outside the output root {root} "
                          "(choose a folder with --output-dir, or move the root with KAITO_OUTPUT_ROOT)")
    config.TrainingArguments["output_dir"] = str(path)


def load_config(path: Path | None, method: str | None = None,
                overrides: dict[str, dict[str, Any]] | None = None, output_dir: str | None = None) -> TrainingConfig:
    """Read `path` (or only the defaults when None) and apply `overrides` and a typed `output_dir`."""
    body = read_file(path) if path is not None else {}
    return build_config(body, method, overrides, output_dir)
