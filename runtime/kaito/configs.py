"""Kaito's default configs, as the pods get them: the training_config.yaml of a tuning Job.

The trainer starts from these defaults (runtime.tuning.config builds its typed config on them) and the controller
writes them into the default ConfigMap, so a rendered Job and a bare `kaito tune` train alike. Plain data: no
pydantic, no torch.
"""

from __future__ import annotations

import copy
from typing import Any

METHODS: tuple[str, ...] = ("lora", "qlora")
SECTIONS = ("ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DatasetConfig", "DataCollator")
"""The six sections of `training_config` (kaito-reference.md §3), in Kaito's order."""

# Kaito's Helm templates qlora-params / lora-params (charts/kaito/workspace/templates), with our deltas:
# output_dir <root>/results (Kaito: /mnt/results); a checkpoint every 50 steps, the last 3 kept (Kaito:
# save_strategy "no"), so a killed job resumes; mlm off (causal LM). These are the defaults of the trainer and,
# through `default_document`, of the ConfigMap the controller renders: one definition for both.
CHECKPOINT_EVERY_STEPS = 50
CHECKPOINTS_KEPT = 3
_COMMON: dict[str, Any] = {
    # No dtype: the rendered ConfigMap writes the sizing plan's (float16 below compute capability 8.0), and the
    # trainer picks for its device when none is given (Kaito's templates say bfloat16 everywhere).
    "ModelConfig": {"local_files_only": True, "device_map": "auto"},
    "LoraConfig": {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0},
    "TrainingArguments": {
        "ddp_find_unused_parameters": False,
        "save_strategy": "steps",
        "save_steps": CHECKPOINT_EVERY_STEPS,
        "save_total_limit": CHECKPOINTS_KEPT,
        "per_device_train_batch_size": 1,
        "num_train_epochs": 3,
    },
    "DataCollator": {"mlm": False},
    "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "qlora": {
        **copy.deepcopy(_COMMON),
        "QuantizationConfig": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
        },
    },
    "lora": {**copy.deepcopy(_COMMON), "QuantizationConfig": {"load_in_4bit": False}},
}


def default_document(method: str, *, output_dir: str, target_modules: list[str] | None = None,
                     dtype: str | None = None) -> dict[str, Any]:
    """The `training_config.yaml` document of `method`'s defaults, as the default ConfigMap holds it; `dtype`
    (the sizing plan's, when the GPU is known) fills both dtype fields."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not supported; use one of {', '.join(METHODS)}")
    body = copy.deepcopy(DEFAULTS[method])
    body["TrainingArguments"] = {"output_dir": output_dir, **body["TrainingArguments"]}
    if dtype:
        body["ModelConfig"] = {"torch_dtype": dtype, **body["ModelConfig"]}
        if body["QuantizationConfig"].get("load_in_4bit"):
            body["QuantizationConfig"]["bnb_4bit_compute_dtype"] = dtype
    if target_modules:
        body["LoraConfig"]["target_modules"] = list(target_modules)
    return {"training_config": {section: body[section] for section in SECTIONS}}


# Kaito's inference_config.yaml (charts/kaito/workspace/templates/inference-params.yaml): top-level settings of
# Kaito's own server, plus one section of engine flags. Our servers accept these keys (the file is Kaito's) and
# the controller writes them into the default ConfigMap.
INFERENCE_DEFAULTS: dict[str, Any] = {"max_probe_steps": 6, "kv_cache_cpu_memory_utilization": 0.5}
INFERENCE_ENGINE_SECTION = "vllm"
INFERENCE_KEYS = frozenset({INFERENCE_ENGINE_SECTION, *INFERENCE_DEFAULTS})
