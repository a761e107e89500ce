"""Image names from presets, registry resolution, and the licence rule for public registries (pure, fast)."""

from __future__ import annotations

import dataclasses

import pytest

import presets
from runtime.images import naming


@pytest.fixture
def gated_preset():
    """A preset whose licence forbids redistribution (like Llama's), derived from a local one."""
    return dataclasses.replace(presets.get("tiny-llama"), name="tiny-gated", license="llama3.1",
                               redistributable=False, gated=True)


def test_default_name_is_kaitos(monkeypatch):
    monkeypatch.delenv(naming.REGISTRY_ENV, raising=False)
    image = naming.preset_image(presets.get("tiny-llama"))
    assert image.reference == "mcr.microsoft.com/aks/kaito/kaito-tiny-llama:0.1.0"
    assert image.public


def test_flag_beats_environment_beats_default(monkeypatch):
    monkeypatch.setenv(naming.REGISTRY_ENV, "myacr.azurecr.io/kaito/")
    preset = presets.get("smollm2-135m-instruct")
    assert naming.preset_image(preset).repository == "myacr.azurecr.io/kaito/kaito-smollm2-135m-instruct"
    assert naming.preset_image(preset, "127.0.0.1:5000", "v9").reference == (
        "127.0.0.1:5000/kaito-smollm2-135m-instruct:v9")


@pytest.mark.parametrize("registry", ["Bad Registry", "https://myacr.azurecr.io", "UPPER.io/x", "host:99999999/x"])
def test_bad_registry_names_the_flag(registry):
    with pytest.raises(naming.ImageNameError, match="--registry"):
        naming.resolve_registry(registry)


def test_bad_registry_from_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv(naming.REGISTRY_ENV, "not a registry")
    with pytest.raises(naming.ImageNameError, match=naming.REGISTRY_ENV):
        naming.resolve_registry()


def test_bad_tag_names_the_flag():
    with pytest.raises(naming.ImageNameError, match="--tag"):
        naming.preset_image(presets.get("tiny-llama"), "127.0.0.1:5000", "-bad:tag")


@pytest.mark.parametrize(
    ("registry", "public"),
    [
        ("mcr.microsoft.com/aks/kaito", True),
        ("docker.io/library", True),
        ("someuser", True),  # a bare Docker Hub namespace
        ("ghcr.io/org", True),
        ("quay.io/org", True),
        ("myacr.azurecr.io/kaito", False),
        ("registry.internal.example:5000/kaito", False),
        ("127.0.0.1:5000", False),
        ("localhost:5000/x", False),
        ("localhost", False),
    ],
)
def test_public_registry_detection(registry, public):
    assert naming.is_public_registry(registry) is public


def test_non_redistributable_preset_refused_for_public_registry(gated_preset, monkeypatch):
    monkeypatch.delenv(naming.REGISTRY_ENV, raising=False)
    image = naming.preset_image(gated_preset)
    assert not image.allowed
    with pytest.raises(naming.ImageNameError, match=r"may not be redistributed.*mcr\.microsoft\.com.*--registry"):
        naming.require_allowed(image)
    with pytest.raises(naming.ImageNameError, match="docker.io"):
        naming.require_allowed(naming.preset_image(gated_preset, "someuser"))


def test_non_redistributable_preset_allowed_for_private_registry(gated_preset):
    image = naming.require_allowed(naming.preset_image(gated_preset, "myacr.azurecr.io/kaito"))
    assert image.reference == "myacr.azurecr.io/kaito/kaito-tiny-gated:0.1.0"


def test_every_registered_preset_has_a_valid_name():
    for preset in presets.all_presets():
        image = naming.preset_image(preset, "127.0.0.1:5000")
        assert image.allowed  # private registry: always allowed
        assert image.reference.startswith(f"127.0.0.1:5000/kaito-{preset.name}:")
        naming.check_tag(image.tag)


def test_runtime_image_name(monkeypatch):
    monkeypatch.delenv(naming.REGISTRY_ENV, raising=False)
    assert naming.runtime_image("gpu") == "mcr.microsoft.com/aks/kaito/kaito-runtime-gpu:0.1.0"
    assert naming.runtime_image("cpu", "127.0.0.1:5000/k", "dev") == "127.0.0.1:5000/k/kaito-runtime-cpu:dev"
