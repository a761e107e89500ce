"""Backend choice: flag, environment, preset preference and whether vLLM is installed."""

from __future__ import annotations

import pytest

from runtime.inference import vllm_select
from runtime.inference.vllm_select import choose_runtime


@pytest.fixture(autouse=True)
def no_env_runtime(monkeypatch):
    monkeypatch.delenv("KAITO_RUNTIME", raising=False)


def test_flag_wins(monkeypatch):
    monkeypatch.setattr(vllm_select, "vllm_installed", lambda: False)
    assert choose_runtime(["tiny-llama", "--runtime", "vllm"]) == "vllm"
    assert choose_runtime(["--runtime=transformers", "--preset", "tiny-llama"]) == "transformers"


def test_environment_counts_as_the_flag(monkeypatch):
    # KAITO_RUNTIME is read once, with every other KAITO_* setting; `kaito serve` then asks choose_runtime only
    # when neither the flag nor the environment chose.
    from runtime.inference.settings import resolve_settings

    assert resolve_settings({"preset": "tiny-llama"}, environ={"KAITO_RUNTIME": "vllm"}).runtime == "vllm"


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="--runtime: unknown runtime 'tgi'"):
        choose_runtime(["--runtime", "tgi"])


def test_vllm_on_a_preset_without_it_is_refused(monkeypatch):
    import dataclasses

    import presets

    only_tf = dataclasses.replace(presets.get("tiny-llama"), name="tf-only", runtimes=("transformers",))
    monkeypatch.setattr(presets, "get", lambda name: only_tf)
    with pytest.raises(ValueError, match="preset tf-only supports only transformers"):
        choose_runtime(["tf-only", "--runtime", "vllm"])


def test_default_follows_the_preset_and_the_installation(monkeypatch):
    import dataclasses

    import presets

    vllm_first = dataclasses.replace(presets.get("tiny-llama"), name="gpu-model", runtimes=("vllm", "transformers"))
    monkeypatch.setattr(presets, "get", lambda name: vllm_first)
    monkeypatch.setattr(vllm_select, "vllm_installed", lambda: True)
    assert choose_runtime(["--port", "5000", "gpu-model"]) == "vllm"
    monkeypatch.setattr(vllm_select, "vllm_installed", lambda: False)
    assert choose_runtime(["gpu-model"]) == "transformers"


def test_local_presets_prefer_transformers():
    # tiny-llama lists transformers first: vLLM only when asked for.
    assert choose_runtime(["tiny-llama"]) == "transformers"


def test_kaito_serve_without_runtime_hands_a_vllm_preset_to_vllm(monkeypatch, capsys):
    """`kaito serve PRESET` with no --runtime goes to the vLLM backend when the preset prefers it and vLLM is
    installed. In this venv vLLM is absent, so reaching the vLLM backend (which says so) proves the choice."""
    import importlib.util

    from runtime.cli import main

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is importable here: serving would really start")
    monkeypatch.setattr(vllm_select, "vllm_installed", lambda: True)
    assert main(["serve", "phi-3-mini-4k-instruct"]) == 2
    assert "runtime vllm: vLLM is not installed" in capsys.readouterr().err
