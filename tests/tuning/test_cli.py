"""`kaito tune` / `python -m runtime.tuning`: bad input ends with exit 2 and one line naming the field."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.cli import main
from tests.tuning.helpers import REPO, rows, write, write_config


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.delenv("YAML_FILE_PATH", raising=False)


def _tune(capsys, *args) -> tuple[int, str]:
    code = main(["tune", "--metrics-port", "0", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "args", "expected"),
    [
        ({"Extra": {}}, [], "unknown section(s) ['Extra']"),
        ({"QuantizationConfig": {"load_in_4bit": True, "load_in_8bit": True}}, [],
         "load_in_4bit and QuantizationConfig.load_in_8bit cannot both be true"),
        ({"QuantizationConfig": {"load_in_4bit": True}}, ["--method", "lora"], "method 'lora' must not quantize"),
        ({"TrainingArguments": {"output_dir": "/tmp/elsewhere"}}, [], "TrainingArguments.output_dir '/tmp/elsewhere'"
         " is outside the output root"),
        ({"ModelConfig": {"device": "cpu"}}, [], "ModelConfig.device: Extra inputs are not permitted"),
    ],
)
def test_bad_config(tmp_path, capsys, body, args, expected):
    config = write_config(tmp_path / "c.yaml", body)
    code, err = _tune(capsys, "--preset", "tiny-llama", "--config", str(config), *args)
    assert code == 2
    assert err.startswith("error: ") and expected in err


def test_config_from_env_and_output_dir_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("YAML_FILE_PATH", str(write_config(tmp_path / "c.yaml", {"Oops": {}})))
    assert _tune(capsys, "--preset", "tiny-llama")[1].count("['Oops']") == 1


@pytest.mark.slow
def test_a_typed_output_dir_and_data_path_are_the_users_choice(tmp_path):
    """`kaito tune --output-dir ./out` was refused ("outside the output root /mnt") unless KAITO_OUTPUT_ROOT was
    set; paths typed on the command line are now relative to the current directory, like any tool's."""
    work = tmp_path / "project"
    write(work / "chats.jsonl", rows("messages", 4))
    env = {k: v for k, v in os.environ.items() if k not in ("KAITO_OUTPUT_ROOT", "YAML_FILE_PATH")}
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "tune", "--preset", "tiny-llama", "--data",
                           "chats.jsonl", "--output-dir", "./out", "--max-steps", "2", "--metrics-port", "0"],
                          cwd=work, env={**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
                                         "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"} <= {
        p.name for p in (work / "out").iterdir()}
    # The guard stays for a config file's output_dir.
    config = write_config(tmp_path / "c.yaml", {"TrainingArguments": {"output_dir": str(work / "out2")}})
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "tune", "--preset", "tiny-llama", "--config",
                           str(config)], cwd=work, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"output_dir '{work / 'out2'}' is outside the output root /mnt" in done.stderr


def test_bad_preset_and_method(tmp_path, capsys):
    code, err = _tune(capsys, "--preset", "no-such-model")
    assert code == 2 and "unknown preset 'no-such-model'" in err and "tiny-llama" in err
    code, err = _tune(capsys)
    assert code == 2 and "--preset" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--preset", "tiny-llama", "--method", "dora"])
    assert exit_info.value.code == 2 and "invalid choice: 'dora'" in capsys.readouterr().err


def test_bad_data(tmp_path, capsys):
    bad = write(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}] * 3 + rows("messages", 2))
    code, err = _tune(capsys, "--preset", "tiny-llama", "--data", str(bad), "--no-memory-check")
    assert code == 2 and "3 of 5 rows are bad" in err and "bad.jsonl row 0: no non-empty assistant message" in err
    code, err = _tune(capsys, "--preset", "tiny-llama", "--data", str(tmp_path / "missing.parquet"),
                      "--no-memory-check")
    assert code == 2 and "missing.parquet' does not exist" in err
    odd = write(tmp_path / "odd.jsonl", [{"question": "a", "answer": "b"}])
    code, err = _tune(capsys, "--preset", "tiny-llama", "--data", str(odd), "--no-memory-check")
    assert code == 2 and "cannot tell the data format from the columns ['answer', 'question']" in err


def test_module_entry_point_help():
    done = subprocess.run([sys.executable, "-m", "runtime.tuning", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--preset", "--method", "--data", "--output-dir", "--config", "--model-path", "--output-image",
                 "--max-steps", "--metrics-port", "--packing"):
        assert flag in done.stdout
