"""Run an image builder: docker, podman or buildah, whichever works here.

All three take the same Dockerfiles. Differences handled here: buildah's verb is `bud`; podman/buildah can
use private storage (`--root/--runroot/--storage-driver`, needed where /var/lib/containers is not usable)
and `--isolation chroot` (where user namespaces are unavailable); docker needs a reachable engine, not just
its CLI. Registry credentials are never passed on the command line: the builders read the usual auth files
(`docker login` / `podman login`, or `REGISTRY_AUTH_FILE`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BUILDERS = ("docker", "buildah", "podman")
"""Detection order: a running Docker engine first, then the daemonless tools."""


class BuilderError(RuntimeError):
    """No usable builder, or a build/push command failed (the message carries the command and its output)."""


@dataclass(frozen=True)
class BuilderOptions:
    """How to call podman/buildah. Each field falls back to an environment variable, then the tool's default."""

    root: Path | None = None
    """Private image storage (--root); env KAITO_BUILDER_ROOT."""
    runroot: Path | None = None
    """Private run state (--runroot); env KAITO_BUILDER_RUNROOT. Default with a root: a short path under the temp
    dir derived from the root (podman refuses a runroot longer than 50 characters)."""
    storage_driver: str | None = None
    """overlay or vfs (--storage-driver); env KAITO_STORAGE_DRIVER."""
    isolation: str | None = None
    """buildah/podman build --isolation (oci, chroot, rootless); env KAITO_BUILD_ISOLATION."""
    oci_runtime: str | None = None
    """podman --runtime (runc where crun cannot manage this host's cgroups); env KAITO_OCI_RUNTIME."""
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> BuilderOptions:
        def env_path(name: str) -> Path | None:
            return Path(os.environ[name]) if os.environ.get(name) else None

        values = {
            "root": env_path("KAITO_BUILDER_ROOT"),
            "runroot": env_path("KAITO_BUILDER_RUNROOT"),
            "storage_driver": os.environ.get("KAITO_STORAGE_DRIVER") or None,
            "isolation": os.environ.get("KAITO_BUILD_ISOLATION") or None,
            "oci_runtime": os.environ.get("KAITO_OCI_RUNTIME") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def storage_flags(self) -> list[str]:
        flags: list[str] = []
        if self.root:
            flags += ["--root", str(self.root), "--runroot", str(self.runroot or default_runroot(Path(self.root)))]
        elif self.runroot:
            flags += ["--runroot", str(self.runroot)]
        if self.storage_driver:
            flags += ["--storage-driver", self.storage_driver]
        return flags


def default_runroot(root: Path) -> Path:
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"kaito-run-{digest}"


def _docker_engine_up(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class Builder:
    """One builder tool and the options to call it with."""

    name: str
    executable: str
    options: BuilderOptions = field(default_factory=BuilderOptions)

    def command_prefix(self) -> list[str]:
        if self.name == "docker":
            return [self.executable]
        return [self.executable, *self.options.storage_flags()]

    def build_command(
        self,
        context: Path,
        tag: str,
        *,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        secrets: Mapping[str, Path] | None = None,
        target: str | None = None,
    ) -> list[str]:
        cmd = self.command_prefix() + (["bud"] if self.name == "buildah" else ["build"])
        if self.name != "docker" and self.options.isolation:
            cmd += ["--isolation", self.options.isolation]
        if self.name == "podman" and self.options.oci_runtime:
            cmd += ["--runtime", self.options.oci_runtime]
        cmd += ["-t", tag, "-f", str(dockerfile or Path(context) / "Dockerfile")]
        for key, value in (build_args or {}).items():
            cmd += ["--build-arg", f"{key}={value}"]
        for secret_id, path in (secrets or {}).items():
            # Only the file's path is on the command line; the builder mounts its content for one RUN step.
            cmd += ["--secret", f"id={secret_id},src={path}"]
        if target:
            cmd += ["--target", target]
        return [*cmd, str(context)]

    def push_command(self, image: str, destination: str | None = None, *, tls_verify: bool = True) -> list[str]:
        if self.name == "docker":
            return [self.executable, "push", image]  # docker decides TLS per registry (daemon.json)
        cmd = [*self.command_prefix(), "push", f"--tls-verify={'true' if tls_verify else 'false'}", image]
        if destination:
            cmd.append(f"docker://{destination}")
        return cmd

    def run(self, cmd: Sequence[str], *, timeout: float | None = None) -> str:
        """Run a builder command; raise BuilderError with its output tail when it fails."""
        log.info("$ %s", shlex.join(cmd))
        env = {**os.environ, **self.options.extra_env}
        if self.name == "docker":
            env.setdefault("DOCKER_BUILDKIT", "1")  # RUN --mount=type=secret needs BuildKit
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-4000:]
            verb = cmd[len(self.command_prefix())] if len(cmd) > len(self.command_prefix()) else ""
            raise BuilderError(f"{cmd[0]} {verb} failed (exit {proc.returncode}):\n{tail}")
        return proc.stdout

    def build(self, context: Path, tag: str, **kwargs) -> None:
        self.run(self.build_command(context, tag, **kwargs))

    def push(self, image: str, destination: str | None = None, *, tls_verify: bool = True) -> None:
        self.run(self.push_command(image, destination, tls_verify=tls_verify))


def detect_builder(prefer: str | None = None, options: BuilderOptions | None = None, which=shutil.which,
                   engine_up=_docker_engine_up) -> Builder:
    """The first usable builder: `prefer` (or $KAITO_IMAGE_BUILDER) if given, else docker (engine running),
    buildah, podman. `which`/`engine_up` are injectable for tests."""
    options = options or BuilderOptions.from_env()
    prefer = prefer or os.environ.get("KAITO_IMAGE_BUILDER") or None
    if prefer is not None and prefer not in BUILDERS:
        raise BuilderError(f"--builder: {prefer!r} is not one of {', '.join(BUILDERS)}")
    tried = []
    for name in [prefer] if prefer else BUILDERS:
        path = which(name)
        if path is None:
            tried.append(f"{name}: not installed")
            continue
        if name == "docker" and not engine_up(path):
            tried.append("docker: CLI found but no engine answers `docker info`")
            continue
        return Builder(name, path, options)
    raise BuilderError("no image builder usable (" + "; ".join(tried) + "); install docker, buildah or podman")
