"""The tuning job: config -> memory check -> data -> model -> TRL SFTTrainer -> adapter, sentinel, push.

Exit codes: 0 done; 2 bad input (config, data, preset, does not fit); 3 adapter trained but the push failed
(it stays on disk; a re-run pushes without retraining); 143 stopped by SIGTERM after saving a checkpoint (a
re-run resumes from it). 143 rather than 0 because a Kubernetes Job counts exit 0 as success.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.kaito import DATA_DIR, INFERENCE_PORT, SENTINEL, WEIGHTS_DIR
from runtime.kaito.templates import TemplateNotFound, preset_template_path, read_template
from runtime.tuning.config import (
    ConfigError,
    TrainingConfig,
    default_config_path,
    load_config,
    output_root,
    resolve_dtypes,
)

log = logging.getLogger(__name__)

METADATA_FILE = "tuning_metadata.json"
CHECKPOINTS = "checkpoints"
EXIT_OK, EXIT_BAD_INPUT, EXIT_PUSH_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 143


class TuneError(ValueError):
    """A user-facing reason the job cannot run (bad preset, config, data, or the model does not fit)."""


@dataclass
class TuneOptions:
    """Command-line choices; every field not None overrides the config file."""

    preset: str | None = None
    """Preset name (env KAITO_PRESET otherwise)."""
    method: str | None = None
    data: list[str] = field(default_factory=list)
    """Files, folders or http(s) URLs; default DatasetConfig.dataset_path, else the first file in /mnt/data."""
    output_dir: str | None = None
    """The user's choice: any folder (relative to the current directory); the output-root guard is for config
    files."""
    config: str | None = None
    model_path: str | None = None
    output_image: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    save_steps: int | None = None
    """Checkpoint every N optimizer steps."""
    packing: bool | None = None
    batch_size: int | None = None
    max_length: int | None = None
    learning_rate: float | None = None
    seed: int | None = None
    metrics_port: int = INFERENCE_PORT
    """0 disables the Prometheus endpoint."""
    memory_check: bool = True
    insecure_registry: bool = False
    keep_checkpoints: bool = False


def overrides_from(opts: TuneOptions) -> dict[str, dict[str, Any]]:
    """Config sections set by flags."""
    train: dict[str, Any] = {}
    for key, value in (("max_steps", opts.max_steps),
                       ("num_train_epochs", opts.epochs), ("save_steps", opts.save_steps),
                       ("packing", opts.packing), ("per_device_train_batch_size", opts.batch_size),
                       ("max_length", opts.max_length), ("learning_rate", opts.learning_rate), ("seed", opts.seed)):
        if value is not None:
            train[key] = value
    out: dict[str, dict[str, Any]] = {"TrainingArguments": train} if train else {}
    if opts.model_path:
        out["ModelConfig"] = {"pretrained_model_name_or_path": opts.model_path}
    return out


# ---- pieces -------------------------------------------------------------------------------------------------


def resolve_preset(name: str | None, method: str):
    import presets

    name = name or os.environ.get("KAITO_PRESET")
    if not name:
        raise TuneError("no preset: pass --preset (or set KAITO_PRESET)")
    try:
        preset = presets.get(name)
    except presets.UnknownPreset as err:
        raise TuneError(str(err)) from None
    if not preset.supports_tuning(method):
        supported = ", ".join(preset.tuning.methods) if preset.tuning else "none"
        raise TuneError(f"preset {preset.name} does not support tuning method {method!r} (supported: {supported})")
    return preset


def model_folder(preset, config: TrainingConfig, model_path: str | None) -> Path:
    """The base weights (runtime.models.local_weights' order): --model-path, the local builder, the configured
    folder, a preset image's baked weights. The trainer never downloads."""
    from runtime.models import NoWeights, local_weights

    configured = config.ModelConfig.pretrained_model_name_or_path
    try:
        folder = local_weights(preset, model_path, (configured, WEIGHTS_DIR))
    except NoWeights as err:
        raise TuneError(f"no model at {model_path} (--model-path): {err}") from None
    if folder is None:
        raise TuneError(f"no model at {configured} or {WEIGHTS_DIR} (ModelConfig.pretrained_model_name_or_path / "
                        "--model-path)")
    return folder


def device_memory_gib() -> tuple[str, float]:
    """The device training runs on and its free memory: the first GPU, else available RAM."""
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(0)
        return f"cuda:0 ({torch.cuda.get_device_name(0)})", free / 1024**3
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return "cpu", int(line.split()[1]) / 1024**2
    return "cpu", float("inf")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX512_BF16 or AMX), from /proc/cpuinfo's flags."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def settle_dtypes(config: TrainingConfig) -> None:
    """resolve_dtypes for the device this job runs on, logging what it picked."""
    import torch

    if torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(0)
        device = f"cuda:0 ({torch.cuda.get_device_name(0)}, compute capability {capability[0]}.{capability[1]})"
        said = resolve_dtypes(config, gpu=True, native_bf16=capability >= (8, 0), device=device)
    else:
        native = cpu_has_native_bf16()
        device = f"the CPU ({'with' if native else 'without'} AVX512_BF16/AMX)"
        said = resolve_dtypes(config, gpu=False, native_bf16=native, device=device)
    if said:
        line, overridden = said
        log.log(logging.WARNING if overridden else logging.INFO, line)


def check_memory(preset, config: TrainingConfig) -> dict[str, float] | None:
    """Refuse, with the sizing plan's numbers, when the estimate is over the device's free memory."""
    from runtime.sizing.plan import PlanError, estimate_tuning_memory

    train = config.TrainingArguments
    batch = int(train.get("per_device_train_batch_size", 1))
    seq_len = min(int(train.get("max_length") or 1024), preset.context_length)
    try:
        estimate = estimate_tuning_memory(preset, config.method, batch_size=batch, seq_len=seq_len,
                                          gradient_checkpointing=bool(train.get("gradient_checkpointing", True)),
                                          lora_rank=int(config.LoraConfig.get("r", 8)),
                                          dtype=config.ModelConfig.torch_dtype)
    except PlanError as err:
        raise TuneError(f"memory plan: {err}") from None
    device, free = device_memory_gib()
    parts = ", ".join(f"{k} {v:.2f}" for k, v in estimate.items() if k != "total")
    if estimate["total"] > free:
        raise TuneError(f"{preset.name} {config.method} needs about {estimate['total']:.2f} GiB ({parts}; batch "
                        f"{batch}, seq {seq_len}) but {device} has {free:.2f} GiB free: lower "
                        "TrainingArguments.per_device_train_batch_size or max_length, "
                        f"{'use qlora, ' if config.method == 'lora' else ''}or use a bigger device")
    log.info("memory plan %.2f GiB (%s) fits %s with %.2f GiB free", estimate["total"], parts, device, free)
    return estimate


def last_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was written to the end (trainer_state.json is saved last)."""
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def _dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}[name]


def load_tokenizer(folder: Path, preset, config: TrainingConfig):
    from transformers import AutoTokenizer

    mc = config.ModelConfig
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=mc.local_files_only,
                                        trust_remote_code=preset.trust_remote_code)
    if mc.chat_template:
        try:
            tok.chat_template = read_template(mc.chat_template)
        except TemplateNotFound as err:
            raise ConfigError(f"ModelConfig.chat_template: {err}") from None
    elif preset.chat_template:
        tok.chat_template = preset_template_path(preset).read_text()
    if not tok.chat_template:
        raise TuneError(f"the tokenizer in {folder} has no chat template; set ModelConfig.chat_template")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _check_keys(section: str, given: dict[str, Any], cls) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown} (not fields of {cls.__module__}.{cls.__name__})")


def load_model(folder: Path, preset, config: TrainingConfig):
    """The base model (4/8-bit for qlora) with a fresh LoRA on the preset's target modules."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, set_seed

    mc, qc = config.ModelConfig, config.QuantizationConfig
    device_map = mc.device_map
    if device_map == "auto":
        device_map = "cuda:0" if torch.cuda.is_available() else "cpu"
    kwargs: dict[str, Any] = {
        "dtype": _dtype(mc.torch_dtype),
        "device_map": device_map,
        "local_files_only": mc.local_files_only,
        "trust_remote_code": preset.trust_remote_code,
        "use_safetensors": True,
    }
    if qc.enabled:
        quant = qc.model_dump(exclude={"quant_method"}, exclude_none=True)
        quant["bnb_4bit_compute_dtype"] = _dtype(qc.bnb_4bit_compute_dtype)
        kwargs["quantization_config"] = BitsAndBytesConfig(**quant)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    model.config.use_cache = False
    gradient_checkpointing = bool(config.TrainingArguments.get("gradient_checkpointing", True))
    if qc.enabled:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)

    lora_kwargs = dict(config.LoraConfig)
    _check_keys("LoraConfig", lora_kwargs, LoraConfig)
    env_targets = os.environ.get("DEFAULT_TARGET_MODULES")  # Kaito sets it for phi-3 presets
    if not lora_kwargs.get("target_modules"):
        lora_kwargs["target_modules"] = (env_targets.split(",") if env_targets
                                         else list(preset.tuning.target_modules))
    lora_kwargs.setdefault("task_type", "CAUSAL_LM")
    # LoRA A is initialised from torch's RNG: seed it, so a restarted job (and a rerun) starts from the same adapter.
    set_seed(int(config.TrainingArguments.get("seed", 42)))
    return get_peft_model(model, LoraConfig(**lora_kwargs))


# Keys of TrainingArguments that are ours, not SFTConfig's, or that we set ourselves.
OWN_TRAINING_KEYS = {"assistant_only_loss"}


def sft_config(config: TrainingConfig, checkpoints: Path, has_eval: bool):
    import torch
    from trl import SFTConfig

    args = {k: v for k, v in config.TrainingArguments.items() if k not in OWN_TRAINING_KEYS}
    _check_keys("TrainingArguments", args, SFTConfig)
    args["output_dir"] = str(checkpoints)
    args.setdefault("report_to", "none")
    args.setdefault("logging_steps", 1)
    args.setdefault("include_num_input_tokens_seen", "non_padding")
    args.setdefault("disable_tqdm", not sys.stderr.isatty())
    args.setdefault("dataloader_num_workers", 0)
    args.setdefault("max_length", 1024)
    if config.DataCollator.pad_to_multiple_of:
        args.setdefault("pad_to_multiple_of", config.DataCollator.pad_to_multiple_of)
    if args.get("max_steps") is None:
        args.pop("max_steps", None)
    if not has_eval:
        args["eval_strategy"] = "no"
    elif "eval_strategy" not in args:
        args["eval_strategy"] = "epoch"
    # Autocast on a GPU in the compute dtype (settle_dtypes made it one the GPU has). On CPU bf16 autocast made a
    # step ~40% slower (measured, SmolLM2 QLoRA) and adds little: a bf16 base already runs its matmuls in bf16.
    if "bf16" not in args and "fp16" not in args:
        qc = config.QuantizationConfig
        compute = qc.bnb_4bit_compute_dtype if qc.enabled else config.ModelConfig.torch_dtype
        args["bf16"] = torch.cuda.is_available() and compute == "bfloat16"
        args["fp16"] = torch.cuda.is_available() and compute == "float16"
    if not torch.cuda.is_available():
        args.setdefault("use_cpu", True)
    # Inputs are tokenised and masked by runtime.tuning.masking already; TRL builds labels from the mask.
    args["assistant_only_loss"] = False
    args["completion_only_loss"] = False
    try:
        return SFTConfig(**args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"TrainingArguments: {err}") from None


def _cpu_trainer_class():
    from transformers import Trainer
    from trl import SFTTrainer

    class CpuSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss is the model's own cross-entropy.

        TRL computes the loss through a tiled LM head that also yields entropy and token accuracy: it saves memory
        on large vocabularies, but made a CPU step ~55% slower (measured, SmolLM2 QLoRA, 300 tokens). Labels
        already carry TRL's masks and packing boundaries, so the model's loss over them is the same objective.
        (A chunked loss of our own was tried: ~10% slower at 300 tokens and no lower peak RSS, so not kept.)
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CpuSFTTrainer


def write_metadata(output_dir: Path, meta: dict[str, Any]) -> None:
    (output_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))


def push(output_dir: Path, ref: str, preset, method: str, insecure: bool) -> None:
    from runtime.adapters.image import adapter_annotations  # lazily: the adapter-images area
    from runtime.adapters.oci import push_adapter

    # The same annotations as `kaito adapter push --preset --method`: one adapter, one digest, however pushed.
    annotations = adapter_annotations(preset.name, preset.revision, method)
    push_adapter(output_dir, ref, annotations=annotations, insecure=insecure)


# ---- the job ------------------------------------------------------------------------------------------------


def run(opts: TuneOptions) -> int:
    """Train (or resume, or only push) as `opts` and the config file say; returns the exit code."""
    config_path = Path(opts.config) if opts.config else default_config_path()
    config = load_config(config_path, opts.method, overrides_from(opts), opts.output_dir)
    method = config.method
    preset = resolve_preset(opts.preset, method)
    output_dir = config.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)

    if (output_dir / SENTINEL).exists():
        log.info("%s exists in %s: training already completed, not training again", SENTINEL, output_dir)
        return _push_step(opts, output_dir, preset, method)

    assistant_only = bool(config.TrainingArguments.get("assistant_only_loss", True))
    settle_dtypes(config)
    if opts.memory_check:
        check_memory(preset, config)

    from runtime.tuning import data as data_mod
    from runtime.tuning.masking import tokenize_dataset
    from runtime.tuning.status import EventLog, Metrics, write_status

    root = output_root()
    events = EventLog(output_dir)
    sources = list(opts.data) or ([config.DatasetConfig.dataset_path] if config.DatasetConfig.dataset_path
                                  else [os.environ.get("DATASET_FOLDER_PATH", DATA_DIR)])
    # URLs are fetched into Kaito's data volume, or next to the adapter when the user chose a folder of their own.
    under_root = output_dir == root or root in output_dir.parents
    data_dir = Path(os.environ.get("DATA_VOLUME_PATH") or (root / "data" if under_root else output_dir / "data"))
    prepared = data_mod.prepare(sources, config.DatasetConfig, data_dir=data_dir, root=root)
    events.write("data", files=[str(f) for f in prepared.files], digest=prepared.digest, rows=prepared.rows,
                 bad_rows=prepared.bad_rows, bad_examples=prepared.bad_examples, formats=prepared.formats,
                 train=len(prepared.train), eval=len(prepared.eval) if prepared.eval is not None else 0)

    folder = model_folder(preset, config, opts.model_path)
    tokenizer = load_tokenizer(folder, preset, config)
    train_set = tokenize_dataset(prepared.train, tokenizer, assistant_only)
    eval_set = tokenize_dataset(prepared.eval, tokenizer, assistant_only) if prepared.eval is not None else None

    import torch
    from trl import SFTTrainer

    from runtime.tuning.callbacks import ProgressCallback, StopOnSignal

    checkpoints = output_dir / CHECKPOINTS
    checkpoints.mkdir(exist_ok=True)
    args = sft_config(config, checkpoints, eval_set is not None)
    model = load_model(folder, preset, config)
    stop = StopOnSignal()
    metrics = Metrics(opts.metrics_port) if opts.metrics_port else None
    progress = ProgressCallback(output_dir, events, metrics)
    try:
        trainer_class = SFTTrainer if torch.cuda.is_available() else _cpu_trainer_class()
        trainer = trainer_class(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                                processing_class=tokenizer, callbacks=[progress, stop])
        # TRL casts a quantized model's LoRA weights to bf16; peft loads a resumed checkpoint's adapter in float32.
        # Keep them float32 from the start, so a resumed job continues exactly where the killed one stopped.
        for param in trainer.model.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()
        if events.echo:  # our JSON lines replace the trainer's printed dicts
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        resume = last_checkpoint(checkpoints)
        if resume:
            log.info("resuming from %s", resume)
            events.write("resume", checkpoint=resume)
        started = time.monotonic()
        result = trainer.train(resume_from_checkpoint=resume)
        if stop.received is not None:
            progress.update("interrupted", trainer.state)
            events.write("interrupted", step=trainer.state.global_step, checkpoint=last_checkpoint(checkpoints))
            log.warning("stopped at step %d; checkpoint saved, a re-run resumes", trainer.state.global_step)
            return EXIT_INTERRUPTED
        final = dict(result.metrics)
        if eval_set is not None:
            final.update(trainer.evaluate())
        trainer.model.save_pretrained(output_dir, safe_serialization=True)
        tokenizer.save_pretrained(output_dir)
        write_metadata(output_dir, {
            "base_preset": preset.name,
            "base_model": preset.hf_repo,
            "revision": preset.revision,
            "method": method,
            "torch_dtype": config.ModelConfig.torch_dtype,
            "compute_dtype": (config.QuantizationConfig.bnb_4bit_compute_dtype if config.QuantizationConfig.enabled
                              else config.ModelConfig.torch_dtype),
            "data_digest": f"sha256:{prepared.digest}",
            "data_rows": prepared.rows,
            "bad_rows": prepared.bad_rows,
            "steps": trainer.state.global_step,
            "tokens": int(trainer.state.num_input_tokens_seen or 0),
            "train_seconds": round(time.monotonic() - started, 2),
            "final_metrics": final,
            "lora": {k: v for k, v in config.LoraConfig.items()},
            "target_modules": sorted(trainer.model.peft_config["default"].target_modules),
        })
        progress.update("completed", trainer.state)
        (output_dir / SENTINEL).write_text(f"completed {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        events.write("completed", step=trainer.state.global_step, metrics=final)
        if not opts.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    except Exception as err:
        write_status(output_dir, {**progress.status, "state": "failed", "error": f"{type(err).__name__}: {err}"})
        raise
    finally:
        stop.restore()
        if metrics:
            metrics.close()
    return _push_step(opts, output_dir, preset, method)


def _push_step(opts: TuneOptions, output_dir: Path, preset, method: str) -> int:
    if not opts.output_image:
        return EXIT_OK
    try:
        push(output_dir, opts.output_image, preset, method, opts.insecure_registry)
    except Exception as err:  # the adapter stays; a re-run only pushes
        log.error("push of %s to %s failed: %s: %s (the adapter stays in %s; re-run to push)", output_dir,
                  opts.output_image, type(err).__name__, err, output_dir)
        return EXIT_PUSH_FAILED
    log.info("pushed adapter to %s", opts.output_image)
    return EXIT_OK
