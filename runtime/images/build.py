"""Build (and push) preset and adapter images with a detected builder, from the contexts context.py writes."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from presets import Preset
from runtime.images import context as contexts
from runtime.images.builders import Builder
from runtime.images.naming import ImageNameError

log = logging.getLogger(__name__)

ADAPTER_DOCKERFILE = contexts.IMAGES_DIR / "adapter" / "Dockerfile"


@dataclass(frozen=True)
class BuiltImages:
    runtime_image: str
    preset_image: str
    pushed: tuple[str, ...] = ()


@contextmanager
def _hf_token_file(path: Path | None):
    """The token file for the hf_token build secret: the given one, else $HF_TOKEN written to a private temp
    file (mode 0600, outside the build context) that is deleted afterwards."""
    if path is not None:
        if not Path(path).is_file():
            raise contexts.ContextError(f"--hf-token-file: {path} is not a file")
        yield Path(path)
        return
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise contexts.ContextError("this preset is gated: set HF_TOKEN or pass --hf-token-file FILE")
    with tempfile.TemporaryDirectory(prefix="kaito-secret-") as tmp:
        secret = Path(tmp) / "hf_token"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        yield secret


def build_preset_image(
    preset: Preset,
    builder: Builder,
    options: contexts.ContextOptions | None = None,
    *,
    runtime_image: str | None = None,
    push: bool = False,
    tls_verify: bool = True,
    hf_token_file: Path | None = None,
    keep_context: Path | None = None,
) -> BuiltImages:
    """Write the context, build the runtime image (unless `runtime_image` names an existing one), build the
    preset image on it, and push with `push`. The context goes to a temp dir, or `keep_context`."""
    options = options or contexts.ContextOptions()
    if runtime_image:  # no runtime build: no wheelhouse needed either
        options = replace(options, wheelhouse=False)
    tmp = None if keep_context else tempfile.mkdtemp(prefix="kaito-image-")
    root = Path(keep_context or tmp)
    try:
        ctx = contexts.write_context(preset, root, options)
        preset_args = dict(ctx.preset_args)
        if runtime_image:
            preset_args["RUNTIME_IMAGE"] = runtime_image
        else:
            builder.build(ctx.runtime_dir, ctx.runtime_image, build_args=ctx.runtime_args)
        if ctx.secrets:
            with _hf_token_file(hf_token_file) as token_file:
                builder.build(ctx.preset_dir, ctx.preset_image, dockerfile=ctx.preset_dockerfile,
                              build_args=preset_args, secrets={contexts.HF_TOKEN_SECRET: token_file})
        else:
            builder.build(ctx.preset_dir, ctx.preset_image, dockerfile=ctx.preset_dockerfile, build_args=preset_args)
        pushed: list[str] = []
        if push:
            targets = [ctx.preset_image] if runtime_image else [ctx.runtime_image, ctx.preset_image]
            for ref in targets:
                builder.push(ref, tls_verify=tls_verify)
                pushed.append(ref)
        return BuiltImages(runtime_image or ctx.runtime_image, ctx.preset_image, tuple(pushed))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def build_adapter_image(
    adapter_dir: Path,
    image: str,
    builder: Builder,
    *,
    adapter_name: str | None = None,
    preset: str | None = None,
    push: bool = False,
    tls_verify: bool = True,
) -> str:
    """Build Kaito's adapter image (FROM scratch, the two adapter files under /data) and push it with `push`."""
    from runtime.kaito import ADAPTER_FILES

    adapter_dir = Path(adapter_dir)
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise contexts.ContextError(f"adapter directory {adapter_dir} lacks {', '.join(missing)}")
    if any(c.isspace() for c in image) or not image:
        raise ImageNameError(f"image: {image!r} is not an image reference")
    with tempfile.TemporaryDirectory(prefix="kaito-adapter-") as tmp:
        ctx = Path(tmp)
        for name in ADAPTER_FILES:
            contexts._copy_file(adapter_dir / name, ctx / name)
        shutil.copy2(ADAPTER_DOCKERFILE, ctx / "Dockerfile")
        args = {"ADAPTER_NAME": adapter_name or adapter_dir.name}
        if preset:
            args["BASE_PRESET"] = preset
        builder.build(ctx, image, build_args=args)
    if push:
        builder.push(image, tls_verify=tls_verify)
    return image
