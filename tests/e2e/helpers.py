"""Helpers of the e2e tier: the `kaito` CLI as a user runs it, and what it leaves behind."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runtime.controller.play import state_dir
from runtime.images.builders import BuilderOptions

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "local" / "kaito_workspace_tiny_llama.yaml"


def kaito(storage: BuilderOptions, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The `kaito` CLI as a user runs it (podman is the default engine where installed), on the tier's storage."""
    env = {**os.environ, "KAITO_BUILDER_ROOT": str(storage.root), "KAITO_STORAGE_DRIVER": storage.storage_driver,
           "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kaito_run(storage: BuilderOptions, port: int, *files: Path) -> subprocess.Popen:
    given = [arg for path in files or (EXAMPLE,) for arg in ("-f", str(path))]
    return kaito(storage, "run", *given, "--local", "--port", str(port))


def until_ready(proc: subprocess.Popen, url: str) -> list[str]:
    """`kaito run`'s lines up to its 'ready:' line (it polls the readiness probe itself), as a user waits."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"ready: {url}"):
            return lines
    pytest.fail("kaito run ended before it was ready:\n" + "".join(lines)[-3000:])


def pod_left(storage: BuilderOptions, name: str = "workspace-tiny-llama") -> bool:
    """The pod, or its folder of volumes, is still there."""
    exists = subprocess.run(["podman", *storage.storage_flags(), "pod", "exists", name])
    return exists.returncode == 0 or state_dir(name).exists()


def podman_objects(storage: BuilderOptions) -> dict[str, list[str]]:
    flags = storage.storage_flags()
    return {kind: subprocess.run(["podman", *flags, kind, *args], capture_output=True, text=True).stdout.split()
            for kind, args in {"pod": ["ps", "-q"], "container": ["ps", "-aq"], "volume": ["ls", "-q"]}.items()}


def pull_secret(tmp_path: Path, registry, password: str) -> Path:
    """The kubernetes.io/dockerconfigjson Secret `registry-creds` (what `kubectl create secret docker-registry`
    writes) holding `password` for `registry`."""
    auth = base64.b64encode(f"{registry.username}:{password}".encode()).decode()
    config = json.dumps({"auths": {registry.host: {"auth": auth}}})
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry-creds"},
              "type": "kubernetes.io/dockerconfigjson",
              "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}
    (tmp_path / "secret.yaml").write_text(yaml.safe_dump(secret))
    return tmp_path / "secret.yaml"


def workspace(tmp_path: Path, **inference) -> Path:
    """The tiny example with more `inference` fields."""
    ws = yaml.safe_load(EXAMPLE.read_text())
    ws["inference"].update(inference)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(ws))
    return tmp_path / "workspace.yaml"
