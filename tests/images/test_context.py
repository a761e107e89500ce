"""Build-context generation (`kaito images context`): files, build args, secrets, weights, refusals.

Only the first test builds the real kaito_runtime wheel (a few seconds); the others pass a placeholder file as
`project_wheel` because they check other parts of the context. No wheelhouse is downloaded here (the `image`
tier does that and builds the result).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

import presets
from runtime.cli import main
from runtime.images import context, naming, versions

REGISTRY = "127.0.0.1:5000/kaito"


@pytest.fixture
def placeholder_wheel(tmp_path) -> Path:
    wheel = tmp_path / "wheel" / "kaito_runtime-0.0.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"placeholder")
    return wheel


def hf_preset(**changes):
    """A preset downloaded from Hugging Face at a pinned revision (derived from tiny-llama, no local builder)."""
    fields = dict(name="hf-model", hf_repo="org/hf-model", revision="b" * 40, local_builder=None)
    return dataclasses.replace(presets.get("tiny-llama"), **{**fields, **changes})


def test_local_preset_context(tiny_model_dir, tmp_path):
    out = tmp_path / "ctx"
    ctx = context.write_context(presets.get("tiny-llama"), out, context.ContextOptions(registry=REGISTRY,
                                                                                        wheelhouse=False))
    assert ctx.preset_image == f"{REGISTRY}/kaito-tiny-llama:0.1.0"
    assert ctx.runtime_image == f"{REGISTRY}/kaito-runtime-cpu:{versions.RUNTIME_IMAGE_TAG}"
    # The runtime part: Dockerfile, pinned requirements, this package as a wheel holding the server and presets.
    assert (out / "runtime" / "Dockerfile").read_text() == (context.IMAGES_DIR / "runtime-cpu" / "Dockerfile").read_text()
    assert "transformers==" in (out / "runtime" / "requirements.txt").read_text()
    [wheel] = (out / "runtime" / "dist").glob("kaito_runtime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"runtime/inference/__main__.py", "presets/local.py", "runtime/images/naming.py"} <= names
    assert ctx.runtime_args["TORCH_VERSION"] == versions.TORCH_CPU_VERSION
    assert ctx.runtime_args["PIP_INDEX_ARGS"] == ""  # no wheelhouse: the build uses the package indexes
    assert [p.name for p in (out / "runtime" / "wheels").iterdir()] == [".keep"]
    # The preset part: the model's serving files, byte for byte, and the local-weights Dockerfile.
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (out / "preset" / "weights" / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    assert "COPY --chown=1000:1000 weights/ /workspace/weights/" in ctx.preset_dockerfile.read_text()
    assert ctx.preset_args == {"RUNTIME_IMAGE": ctx.runtime_image, "PRESET_NAME": "tiny-llama",
                               "PRESET_REVISION": "local"}
    assert ctx.secrets == []
    meta = json.loads((out / "context.json").read_text())
    assert meta["preset_image"] == ctx.preset_image and meta["preset_dockerfile"] == "preset/Dockerfile"
    script = (out / "build.sh").read_text()
    subprocess.run(["sh", "-n", str(out / "build.sh")], check=True)
    assert f"PRESET_IMAGE={ctx.preset_image}" in script and "-f preset/Dockerfile preset" in script
    assert "--build-arg PRESET_NAME=tiny-llama" in script and "HF_TOKEN" not in script


def test_explicit_weights_folder(tiny_model_dir, tmp_path, placeholder_wheel):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (weights / name).write_bytes((tiny_model_dir / name).read_bytes())
    (weights / "optimizer.pt").write_bytes(b"pickle, never packed")
    (weights / ".cache").mkdir()
    (weights / ".cache" / "x.json").write_text("{}")
    ctx = context.write_context(presets.get("smollm2-135m-instruct"), tmp_path / "ctx", context.ContextOptions(
        registry=REGISTRY, weights=weights, wheelhouse=False, project_wheel=placeholder_wheel))
    packed = sorted(p.name for p in (ctx.preset_dir / "weights").rglob("*"))
    assert packed == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert ctx.weights_source == f"local folder {weights}"


def test_weights_without_safetensors_or_config_are_refused(tmp_path, placeholder_wheel):
    weights = tmp_path / "w"
    weights.mkdir()
    opts = context.ContextOptions(registry=REGISTRY, weights=weights, project_wheel=placeholder_wheel)
    with pytest.raises(context.ContextError, match=r"--weights: .*\(no config.json\)"):
        context.write_context(presets.get("tiny-llama"), tmp_path / "a", opts)
    (weights / "config.json").write_text("{}")
    (weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(context.ContextError, match=r"--weights: .*no \*\.safetensors"):
        context.write_context(presets.get("tiny-llama"), tmp_path / "b", opts)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # checked before writing anything


def test_hf_preset_downloads_at_the_pinned_revision(tmp_path, placeholder_wheel):
    ctx = context.write_context(hf_preset(), tmp_path / "ctx", context.ContextOptions(
        registry=REGISTRY, runtime="gpu", project_wheel=placeholder_wheel))
    assert ctx.preset_args["HF_REPO"] == "org/hf-model" and ctx.preset_args["HF_REVISION"] == "b" * 40
    assert ctx.preset_dockerfile.read_text() == (context.IMAGES_DIR / "preset" / "Dockerfile.hf").read_text()
    assert not (ctx.preset_dir / "weights").exists()
    assert ctx.secrets == []  # not gated: no token needed
    assert ctx.runtime_image.endswith("/kaito-runtime-gpu:" + versions.RUNTIME_IMAGE_TAG)
    assert ctx.runtime_args["VLLM_VERSION"] == versions.VLLM_VERSION
    assert "vllm==${VLLM_VERSION}" in (ctx.runtime_dir / "Dockerfile").read_text()


def test_gated_preset_needs_the_token_secret(tmp_path, placeholder_wheel):
    gated = hf_preset(name="gated-model", gated=True, redistributable=False, license="llama3.1")
    ctx = context.write_context(gated, tmp_path / "ctx", context.ContextOptions(
        registry="myacr.azurecr.io/kaito", project_wheel=placeholder_wheel, wheelhouse=False))
    assert ctx.secrets == [context.HF_TOKEN_SECRET]
    script = (tmp_path / "ctx" / "build.sh").read_text()
    assert '--secret "id=hf_token,src=${HF_TOKEN_FILE}"' in script and "set HF_TOKEN_FILE" in script
    subprocess.run(["sh", "-n", str(tmp_path / "ctx" / "build.sh")], check=True)
    # The default registry is public: refused before anything is written.
    with pytest.raises(naming.ImageNameError, match="may not be redistributed"):
        context.write_context(gated, tmp_path / "public", context.ContextOptions(registry="mcr.microsoft.com/x"))
    assert not (tmp_path / "public").exists()


def test_local_revision_without_weights_is_refused(tmp_path, placeholder_wheel):
    with pytest.raises(context.ContextError, match="no pinned revision.*--weights"):
        context.write_context(hf_preset(revision="local"), tmp_path / "ctx",
                              context.ContextOptions(registry=REGISTRY, project_wheel=placeholder_wheel))


def test_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(context.ContextError, match="not empty"):
        context.write_context(presets.get("tiny-llama"), tmp_path, context.ContextOptions(registry=REGISTRY))


def test_cli_list_and_refusals(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(naming.REGISTRY_ENV, raising=False)
    assert main(["images", "list", "--registry", "127.0.0.1:5000"]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:5000/kaito-tiny-llama:0.1.0" in out and "runtime image: 127.0.0.1:5000/kaito-runtime-cpu" in out
    assert main(["images", "context", "tiny-llama", str(tmp_path / "c"), "--registry", "Not A Registry"]) == 2
    assert "--registry" in capsys.readouterr().err
    assert main(["images", "context", "no-such-preset", str(tmp_path / "d")]) == 2
    assert "unknown preset" in capsys.readouterr().err
