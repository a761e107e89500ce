"""`kaito presets ...` and `kaito plan ...`: the acceptance commands through the installed console script, as a
user runs them; the other cases in-process through `runtime.cli.main` (same parser and handlers, no 0.3 s
interpreter start per call)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.sizing.test_generate import LLAMA_31_8B_CONFIG, LLAMA_31_8B_INDEX

KAITO = str(Path(sys.executable).parent / "kaito")


def kaito(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KAITO, *args], capture_output=True, text=True, timeout=60)


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(capsys, *args: str) -> _Result:
    from runtime.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def test_presets_list_table_and_json():
    table = kaito("presets", "list")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["NAME", "FAMILY", "PARAMS"] and len(rows) - 1 >= 24
    assert any(r.startswith("llama-3.3-70b-instruct ") for r in rows)
    data = json.loads(subprocess.run([KAITO, "presets", "list", "-o", "json"], capture_output=True, text=True,
                                     timeout=60).stdout)
    assert len(data) >= 24 and {"name", "sources", "kv_cache_bytes_per_token", "image"} <= set(data[0])


def test_presets_show(capsys):
    out = run_main(capsys, "presets", "show", "falcon-7b")
    assert out.returncode == 0
    assert "tensor_parallel              False" in out.stdout and "sources:" in out.stdout
    data = json.loads(run_main(capsys, "presets", "show", "Phi-4", "-o", "json").stdout)
    assert data["name"] == "phi-4" and data["image"] == "kaito-phi-4:0.2.0"
    bad = run_main(capsys, "presets", "show", "gpt-5")
    assert bad.returncode == 2 and "unknown preset 'gpt-5'" in bad.stderr and "phi-4" in bad.stderr


def test_plan_acceptance():
    ok = kaito("plan", "phi-3-mini-4k-instruct", "--instance-type", "Standard_NC24ads_A100_v4")
    assert ok.returncode == 0, ok.stderr
    assert "tensor parallel          1" in ok.stdout and "required" in ok.stdout and "kv_cache" in ok.stdout
    no = kaito("plan", "llama-3.3-70b-instruct", "--instance-type", "Standard_NC24ads_A100_v4")
    assert no.returncode != 0
    assert "short by 76.48 GiB per GPU" in no.stderr
    assert "smallest instance type that fits: Standard_NC80adis_H100_v5" in no.stderr


def test_plan_json_tuning_and_labels(tmp_path, capsys):
    data = json.loads(run_main(capsys, "plan", "llama-3.3-70b-instruct", "--instance-type", "Standard_NC96ads_A100_v4",
                            "--max-model-len", "32768", "-o", "json").stdout)
    assert data["fits"] and data["tensor_parallel_size"] == 4 and data["max_model_len"] == 32768
    tune = json.loads(run_main(capsys, "plan", "falcon-7b", "--instance-type", "Standard_NV36ads_A10_v5", "--tuning", "qlora",
                            "-o", "json").stdout)
    assert tune["method"] == "qlora" and tune["required_gib_per_gpu"] <= tune["available_gib_per_gpu"]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"nvidia.com/gpu.product": "NVIDIA-L40S", "nvidia.com/gpu.count": "2",
                                  "nvidia.com/gpu.memory": "46068"}))
    byo = run_main(capsys, "plan", "qwen2.5-coder-32b-instruct", "--node-labels", str(labels))
    assert byo.returncode == 0, byo.stderr
    assert "byo:NVIDIA-L40S" in byo.stdout
    bad = run_main(capsys, "plan", "phi-4", "--instance-type", "Standard_NC24ads_A100", "--max-model-len", "4096")
    assert bad.returncode == 2 and "did you mean Standard_NC24ads_A100_v4" in bad.stderr
    long = run_main(capsys, "plan", "phi-4", "--instance-type", "Standard_NC24ads_A100_v4", "--max-model-len", "40000")
    assert long.returncode == 2 and "max_model_len 40000 exceeds" in long.stderr


def test_generate_prints_a_module(tmp_path, capsys):
    config, index = tmp_path / "config.json", tmp_path / "model.safetensors.index.json"
    config.write_text(json.dumps(LLAMA_31_8B_CONFIG))
    index.write_text(json.dumps(LLAMA_31_8B_INDEX))
    out = run_main(capsys, "presets", "generate", "--config", str(config), "--name", "my-model", "--index", str(index))
    assert out.returncode == 0, out.stderr
    assert "my_model = Preset(" in out.stdout and "weights_gib=14.96," in out.stdout
    compile(out.stdout, "generated.py", "exec")
    missing = run_main(capsys, "presets", "generate", "--config", str(tmp_path / "nope.json"), "--name", "x")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_instance_types_list(capsys):
    out = run_main(capsys, "instance-types", "--provider", "aws")
    assert out.returncode == 0 and "p5.48xlarge" in out.stdout and "Standard_" not in out.stdout
