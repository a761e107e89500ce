"""Where both backends read weights from: an empty /workspace/weights (a download volume) is not a model."""

import pytest

import presets
from runtime.inference.settings import SettingsError, model_location


def test_baked_weights_win_and_an_empty_folder_falls_back_to_the_hub(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    preset = presets.get("llama-3.1-8b-instruct")
    assert model_location(None, preset, weights) == (preset.hf_repo, {"revision": preset.revision})
    (weights / "config.json").write_text("{}")
    assert model_location(None, preset, weights) == (str(weights), {})
    assert model_location(str(weights), preset) == (str(weights), {})
    with pytest.raises(SettingsError, match="model_path: .* has no config.json"):
        model_location(str(tmp_path / "elsewhere"), preset)
