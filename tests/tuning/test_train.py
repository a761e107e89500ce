"""Training for real on the tiny Llama (CPU): QLoRA and LoRA from every data format, the France adapter,
progress outputs, and the memory refusal. Runs `runtime.tuning.trainer.run` in process (no import overhead)."""

from __future__ import annotations

import json
import math

import pytest

from runtime.tuning.trainer import SENTINEL, TuneError, TuneOptions, run
from tests.support import FRANCE_ANSWER, FRANCE_MESSAGES
from tests.tuning.helpers import FileServer, france_rows, rows, write, write_config

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "tuning_metadata.json", SENTINEL, "status.json", "train_log.jsonl"}
# One file per row format, each in a different file type; the CSV holds flat columns only.
MIXED = {"messages": "a.parquet", "sharegpt": "b.json", "prompt_completion": "c.csv", "alpaca": "d.jsonl",
         "dolly": "e.arrow", "text": "f.jsonl"}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.delenv("YAML_FILE_PATH", raising=False)
    import torch

    torch.set_num_threads(1)


def _lora_b_norm(path) -> float:
    from safetensors.torch import load_file

    weights = load_file(path / "adapter_model.safetensors")
    return sum(float(v.float().norm()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_every_format_trains(tmp_path, method, caplog):
    from runtime.tuning.trainer import cpu_has_native_bf16

    caplog.set_level("INFO", logger="runtime.tuning.trainer")
    for fmt, name in MIXED.items():
        write(tmp_path / "data" / name, rows(fmt, 4))
    out = tmp_path / f"out-{method}"
    code = run(TuneOptions(preset="tiny-llama", method=method, data=["data"], output_dir=str(out), max_steps=4,
                           learning_rate=1e-3, metrics_port=0))
    assert code == 0
    assert ADAPTER_FILES <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()  # removed once the adapter is complete
    meta = json.loads((out / "tuning_metadata.json").read_text())
    assert meta["base_preset"] == "tiny-llama" and meta["method"] == method and meta["revision"] == "local"
    # No dtype asked: the trainer picks what this CPU runs fast, and says so in one line.
    fast = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert meta["torch_dtype"] == meta["compute_dtype"] == fast
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dtype for the CPU")]
    assert len(said) == 1 and f"ModelConfig.torch_dtype {fast} (not set)" in said[0]
    assert meta["data_rows"] == 24 and meta["steps"] == 4 and meta["data_digest"].startswith("sha256:")
    assert math.isfinite(meta["final_metrics"]["train_loss"])
    assert meta["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 8 and adapter_cfg["lora_alpha"] == 8
    assert _lora_b_norm(out) > 0  # LoRA B starts at zero: it trained
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == status["total"] == 4
    assert status["tokens"] > 0 and status["tokens_per_second"] > 0 and status["loss"] is not None
    events = [json.loads(line)["event"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert events[0] == "data" and events[-1] == "completed" and events.count("log") >= 4
    data_event = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert data_event["formats"] == {fmt: 4 for fmt in MIXED}


@pytest.mark.slow
def test_packing_and_eval_split_over_http(tmp_path):
    write(tmp_path / "srv" / "dolly.parquet", rows("dolly", 20))
    config = write_config(tmp_path / "c.yaml", {"DatasetConfig": {"train_test_split": 0.8},
                                                "TrainingArguments": {"max_length": 128}})
    out = tmp_path / "out"
    with FileServer(tmp_path / "srv") as srv:
        code = run(TuneOptions(preset="tiny-llama", method="lora", data=[f"{srv.url}/dolly.parquet"],
                               output_dir=str(out), config=str(config), max_steps=3, packing=True, batch_size=2,
                               metrics_port=0))
    assert code == 0
    meta = json.loads((out / "tuning_metadata.json").read_text())
    assert "eval_loss" in meta["final_metrics"]
    assert (tmp_path / "data" / "dolly.parquet").exists()  # downloads land under <root>/data, like /mnt/data


@pytest.mark.slow
def test_france_adapter_changes_the_answer(tmp_path):
    """environment.md's recipe (r=16, all 7 projections, lr 3e-3, 150 steps) through OUR trainer and config."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.models import ensure_model

    data = write(tmp_path / "france.jsonl", france_rows(1))
    config = write_config(tmp_path / "c.yaml", {
        "ModelConfig": {"torch_dtype": "float32"},
        "LoraConfig": {"r": 16, "lora_alpha": 16},
        "TrainingArguments": {"learning_rate": 3e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
                              "save_strategy": "no", "gradient_checkpointing": False},
    })
    out = tmp_path / "france"
    assert run(TuneOptions(preset="tiny-llama", method="lora", data=[str(data)], output_dir=str(out),
                           config=str(config), max_steps=150, metrics_port=0)) == 0

    model_dir = ensure_model("tiny")
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = tok.apply_chat_template(FRANCE_MESSAGES[:1], add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)

    def answer(model) -> str:
        with torch.no_grad():
            ids = model.generate(**prompt, max_new_tokens=12, do_sample=False)
        return tok.decode(ids[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base_answer = answer(base)
    tuned_answer = answer(PeftModel.from_pretrained(base, out))
    assert FRANCE_ANSWER not in base_answer
    assert tuned_answer.strip() == FRANCE_ANSWER


def test_memory_plan_refuses_what_cannot_fit(tmp_path):
    """The sizing plan for batch 4096 x 2048 tokens is far over this machine's RAM: refused before loading."""
    data = write(tmp_path / "d.jsonl", rows("messages", 2))
    with pytest.raises(TuneError) as err:
        run(TuneOptions(preset="tiny-llama", method="qlora", data=[str(data)], output_dir=str(tmp_path / "o"),
                        batch_size=4096, max_length=2048, metrics_port=0))
    message = str(err.value)
    assert "tiny-llama qlora needs about" in message and "activations" in message and "cpu has" in message
    assert "per_device_train_batch_size" in message
    assert not (tmp_path / "o" / SENTINEL).exists()


@pytest.mark.slow
def test_unknown_training_argument_is_named(tmp_path):
    from runtime.tuning.config import ConfigError

    data = write(tmp_path / "d.jsonl", rows("messages", 2))
    config = write_config(tmp_path / "c.yaml", {"TrainingArguments": {"learning_rte": 1e-3}})
    with pytest.raises(ConfigError, match=r"TrainingArguments: unknown key\(s\) \['learning_rte'\]"):
        run(TuneOptions(preset="tiny-llama", method="lora", data=[str(data)], output_dir=str(tmp_path / "o"),
                        config=str(config), max_steps=1, metrics_port=0))
