"""`check_adapter_folder`: what both serving backends require of an adapter folder before they load it."""

from __future__ import annotations

import json
import struct

import pytest

from runtime.kaito.adapters import AdapterFolderError, check_adapter_folder


def safetensors_bytes(names=("base_model.model.layers.0.q_proj.lora_A.weight",)) -> bytes:
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]} for name in names[:1]}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0"


def folder(tmp_path, config=None, weights=None, name="adapter"):
    path = tmp_path / name
    path.mkdir()
    if config is not None:
        (path / "adapter_config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights is not None:
        (path / "adapter_model.safetensors").write_bytes(weights)
    return path


GOOD = {"peft_type": "LORA", "r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]}


def test_a_good_folder_gives_its_config(tmp_path):
    assert check_adapter_folder(folder(tmp_path, GOOD, safetensors_bytes()))["r"] == 8


@pytest.mark.parametrize(("config", "weights", "reason"), [
    (None, b"", "lacks adapter_config.json, adapter_model.safetensors"),
    ("not json", safetensors_bytes(), "adapter_config.json is not valid JSON"),
    ("[1]", safetensors_bytes(), "must be a JSON object, got list"),
    ({}, safetensors_bytes(), "adapter_config.json: field peft_type must be \"LORA\", got None"),
    ({**GOOD, "peft_type": "IA3"}, safetensors_bytes(), "field peft_type must be \"LORA\", got 'IA3'"),
    ({**GOOD, "r": 0}, safetensors_bytes(), "adapter_config.json: field r (the LoRA rank) must be a positive integer, got 0"),
    ({**GOOD, "r": True}, safetensors_bytes(), "got True"),
    (GOOD, b"", "not a safetensors file"),
    (GOOD, struct.pack("<Q", 10**12) + b"{}", "not a safetensors file"),
    (GOOD, struct.pack("<Q", 2) + b"{}", "not a safetensors file"),
])
def test_bad_folders_are_named_with_the_reason(tmp_path, config, weights, reason):
    path = folder(tmp_path, config, weights)
    if config is None:
        (path / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterFolderError) as err:
        check_adapter_folder(path)
    assert reason in str(err.value)


def test_paths_the_filesystem_refuses_are_errors_not_crashes(tmp_path):
    with pytest.raises(AdapterFolderError, match="cannot read .*: File name too long"):
        check_adapter_folder(tmp_path / ("a" * 300))
    with pytest.raises(AdapterFolderError, match="is not a folder"):
        check_adapter_folder(tmp_path / "missing")
