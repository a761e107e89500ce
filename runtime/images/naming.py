"""Image names for presets, and the licence rule for where they may be pushed.

Names follow Kaito: `<registry>/kaito-<preset>:<tag>`, with the registry taken from the `--registry` flag,
else the `PRESET_REGISTRY_NAME` environment variable (the name Kaito's controller uses), else
`mcr.microsoft.com/aks/kaito`. Standard library only: `kaito images list` must start instantly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from presets import Preset

DEFAULT_REGISTRY = "mcr.microsoft.com/aks/kaito"
REGISTRY_ENV = "PRESET_REGISTRY_NAME"

# Registries anyone can pull from without credentials that the image owner controls. Baking weights whose
# licence forbids redistribution into an image there would redistribute them. Everything else (a private
# ACR such as myacr.azurecr.io, a self-hosted registry, localhost) counts as private.
PUBLIC_REGISTRY_HOSTS = frozenset({
    "mcr.microsoft.com",
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "ghcr.io",
    "quay.io",
    "gcr.io",
    "registry.k8s.io",
    "public.ecr.aws",
    "nvcr.io",
    "registry.gitlab.com",
})

# host[:port] then optional lower-case path components (OCI distribution spec, simplified).
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageNameError(ValueError):
    """A registry, tag or licence problem; the message names the field and the fix."""


def resolve_registry(flag: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The registry prefix: the flag, else $PRESET_REGISTRY_NAME, else mcr.microsoft.com/aks/kaito."""
    env = os.environ if environ is None else environ
    registry = (flag or env.get(REGISTRY_ENV) or DEFAULT_REGISTRY).strip().rstrip("/")
    source = "--registry" if flag else (REGISTRY_ENV if env.get(REGISTRY_ENV) else "default registry")
    if not _REGISTRY.match(registry):
        raise ImageNameError(
            f"{source}: {registry!r} is not a registry; expected host[:port][/path] in lower case, "
            "e.g. myacr.azurecr.io/kaito or 127.0.0.1:5000"
        )
    return registry


def registry_host(registry: str) -> str:
    """The host part of a registry prefix (a bare first component without '.' or ':' means Docker Hub)."""
    first = registry.split("/", 1)[0]
    if "." not in first and ":" not in first and first != "localhost":
        return "docker.io"
    return first.split(":", 1)[0]


def is_public_registry(registry: str) -> bool:
    return registry_host(registry) in PUBLIC_REGISTRY_HOSTS


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ImageNameError(f"--tag: {tag!r} is not a valid image tag (letters, digits, '_', '.', '-'; max 128)")
    return tag


@dataclass(frozen=True)
class PresetImage:
    """The image a preset builds into."""

    preset: Preset
    registry: str
    tag: str

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.preset.image_name}"

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def public(self) -> bool:
        return is_public_registry(self.registry)

    @property
    def allowed(self) -> bool:
        """False when the preset's licence forbids putting its weights into this (public) registry."""
        return self.preset.redistributable or not self.public


def preset_image(preset: Preset, registry: str | None = None, tag: str | None = None) -> PresetImage:
    """Name the image of `preset`; `registry` and `tag` override the defaults (flag values, may be None)."""
    return PresetImage(preset, resolve_registry(registry), check_tag(tag or preset.image_tag))


def require_allowed(image: PresetImage) -> PresetImage:
    """Refuse a non-redistributable preset's image for a public registry."""
    if not image.allowed:
        raise ImageNameError(
            f"preset {image.preset.name!r} ({image.preset.license}) may not be redistributed, so its weights "
            f"cannot go into an image for the public registry {registry_host(image.registry)}; pass --registry "
            f"(or set {REGISTRY_ENV}) to a private registry, e.g. myacr.azurecr.io/kaito"
        )
    return image


def runtime_image(runtime: str, registry: str | None = None, tag: str | None = None) -> str:
    """The runtime (base) image the preset images build on: <registry>/kaito-runtime-<cpu|gpu>:<tag>."""
    from runtime.images.versions import RUNTIME_IMAGE_TAG

    return f"{resolve_registry(registry)}/kaito-runtime-{runtime}:{check_tag(tag or RUNTIME_IMAGE_TAG)}"
