"""The e2e tier's shared parts: the tiny preset image in a private storage, and a registry with htpasswd auth."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import presets
from runtime.controller import render
from runtime.images import base, build, context
from runtime.images.builders import Builder, BuilderOptions
from tests.registry import registry_fixture

TOOLS = ("buildah", "podman", "catatonit", "debootstrap", "runc")

secured_registry = registry_fixture(auth="htpasswd", scope="session")


@pytest.fixture(scope="session")
def storage() -> BuilderOptions:
    """The tiny preset image, under its default name, in a private overlay storage (built once, then cached)."""
    from runtime.models import cache_dir

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(TOOLS)} (missing: {', '.join(missing) or 'root'})")
    options = BuilderOptions(root=cache_dir() / "images" / "storage-overlay", storage_driver="overlay",
                             isolation="chroot")
    builder = Builder("buildah", shutil.which("buildah"), options)
    image = render.preset_image(presets.get("tiny-llama"), render.RenderSettings())  # what the pod references
    if subprocess.run(["podman", *options.storage_flags(), "image", "exists", image]).returncode != 0:
        build.build_preset_image(presets.get("tiny-llama"), builder,
                                 context.ContextOptions(base_image=base.ensure_base_image(builder)))
    return options
