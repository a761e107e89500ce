"""Where the vLLM backend reads weights from: an empty /workspace/weights (a download volume) is not a model."""

import presets
from runtime.inference import vllm_backend


def test_baked_weights_win_and_an_empty_folder_falls_back_to_the_hub(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(vllm_backend, "DEFAULT_WEIGHTS_DIR", weights)
    preset = presets.get("llama-3.1-8b-instruct")
    assert vllm_backend._model_location(None, preset) == (preset.hf_repo, {"revision": preset.revision})
    (weights / "config.json").write_text("{}")
    assert vllm_backend._model_location(None, preset) == (str(weights), {})
    assert vllm_backend._model_location("/elsewhere", preset) == ("/elsewhere", {})
