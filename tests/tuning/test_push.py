"""`--output-image`: the adapter is pushed to a real `docker-registry` on loopback after the sentinel; a failed
push keeps the adapter and exits 3, and a re-run pushes without training again."""

from __future__ import annotations

import json

import pytest

from runtime.tuning.trainer import EXIT_PUSH_FAILED, SENTINEL, TuneOptions, run
from tests.registry import run_registry
from tests.support import free_port
from tests.tuning.helpers import rows, write


@pytest.mark.slow
@pytest.mark.registry
def test_push_after_training_and_retry_without_retraining(tmp_path, monkeypatch):
    from runtime.adapters.oci import pull

    monkeypatch.setenv("KAITO_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.delenv("YAML_FILE_PATH", raising=False)
    data = write(tmp_path / "d.jsonl", rows("messages", 4))
    out = tmp_path / "out"
    def tune(ref: str) -> int:
        return run(TuneOptions(preset="tiny-llama", method="lora", data=[str(data)], output_dir=str(out),
                               max_steps=2, metrics_port=0, output_image=ref, insecure_registry=True))

    assert tune(f"127.0.0.1:{free_port()}/adapters/tiny-chat:v1") == EXIT_PUSH_FAILED  # nothing listens there
    assert (out / SENTINEL).exists() and (out / "adapter_model.safetensors").exists()
    trained_at = (out / "adapter_model.safetensors").stat().st_mtime_ns

    with run_registry(tmp_path / "registry") as registry:
        ref = f"{registry.host}/adapters/tiny-chat:v1"
        assert tune(ref) == 0
        pulled = pull(ref, tmp_path / "pulled", insecure=True)
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == trained_at  # not retrained
    events = [json.loads(line)["event"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert events.count("train_begin") == 1
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (pulled / name).read_bytes() == (out / name).read_bytes()
