"""A local Debian base image with Python 3.11, made by debootstrap: for building our images where no public
registry (Docker Hub, MCR) can be reached. Pass it as `--base-image` (BASE_IMAGE).

The root file system is made once and cached as a tar under the cache dir (`~/.cache/kaito-runtime/images/`):
`debootstrap --variant=minbase --include=python3,python3-venv bookworm` (~50 s, ~180 MB once trimmed), then
imported into the builder's storage on demand (a few seconds). python3-venv gives `python3 -m venv` with pip,
as the python:*-slim images have.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from runtime.images.builders import Builder, BuilderError

log = logging.getLogger(__name__)

BASE_VERSION = "v1"
"""Bump when the recipe changes, so stale cached root file systems are rebuilt."""
BASE_IMAGE = f"localhost/kaito-debian-python:bookworm-{BASE_VERSION}"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Trimmed after debootstrap: downloaded .debs, apt lists (builds run `apt-get update` first, as on any image),
# docs, man pages and translations.
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
        "usr/share/info")


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """This machine's Debian mirror (deb822 `URIs:` of the main archive), else deb.debian.org."""
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for uri in re.findall(r"^URIs:\s*(\S+)", text, flags=re.M):
        if "security" not in uri:
            return uri
    return DEFAULT_MIRROR


def base_tar(cache: Path | None = None) -> Path:
    from runtime.models import cache_dir

    return (cache or cache_dir() / "images") / f"debian-{SUITE}-python-{BASE_VERSION}.tar"


def ensure_base_tar(cache: Path | None = None, mirror: str | None = None) -> Path:
    """The cached root file system tar, made with debootstrap (as root) if missing. Atomic: temp, then rename."""
    target = base_tar(cache)
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise BuilderError("debootstrap is not installed (apt-get install debootstrap); it makes the local base image")
    if os.geteuid() != 0:
        raise BuilderError("debootstrap needs root to make the local base image")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".debootstrap-", dir=target.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs),
               mirror or debian_mirror()]
        log.info("making the base image root file system: %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuilderError(f"debootstrap failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
        for rel in TRIM:
            path = rootfs / rel
            if path.is_dir():
                shutil.rmtree(path)
                path.mkdir(parents=True)
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(target)
    return target


def image_exists(builder: Builder, image: str) -> bool:
    if builder.name == "docker":
        cmd = [builder.executable, "image", "inspect", image]
    elif builder.name == "podman":
        cmd = [*builder.command_prefix(), "image", "exists", image]
    else:
        cmd = [*builder.command_prefix(), "inspect", "--type", "image", image]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def ensure_base_image(builder: Builder, cache: Path | None = None, mirror: str | None = None) -> str:
    """Import the cached root file system into the builder's storage as BASE_IMAGE (if not there yet)."""
    if image_exists(builder, BASE_IMAGE):
        return BASE_IMAGE
    tar = ensure_base_tar(cache, mirror)
    change = ["--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "--change", 'CMD ["python3"]']
    if builder.name in ("docker", "podman"):
        builder.run([*builder.command_prefix(), "import", *change, str(tar), BASE_IMAGE])
    else:  # buildah has no `import`: a scratch container, the tar added at /, committed
        container = builder.run([*builder.command_prefix(), "from", "scratch"]).strip().splitlines()[-1]
        try:
            builder.run([*builder.command_prefix(), "add", container, str(tar), "/"])
            builder.run([*builder.command_prefix(), "config", "--env",
                         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "--cmd", "python3",
                         container])
            builder.run([*builder.command_prefix(), "commit", "--quiet", container, BASE_IMAGE])
        finally:
            subprocess.run([*builder.command_prefix(), "rm", container], capture_output=True)
    return BASE_IMAGE
