"""`kaito tune` / `python -m runtime.tuning`: bad input ends with exit 2 and one line naming the field."""

from __future__ import annotations

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
    monkeypatch.delenv("YAML_FILE_PATH")
    code, err = _tune(capsys, "--preset", "tiny-llama", "--output-dir", "/var/adapter")
    assert code == 2 and "output_dir '/var/adapter' is outside the output root" in err


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
