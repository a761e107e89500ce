"""`kaito run --local --engine podman`: an example Workspace's rendered pod, played by `podman kube play`, serving.

Real parts: the tiny preset's image built with buildah on the local debootstrap base (kept in the image tier's
storage between runs, so only the first run builds it), podman 4.3's kube play with catatonit and runc, HTTP and
the `openai` client against the published port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import presets
from runtime.controller import render
from runtime.images import base, build, context
from runtime.images.builders import Builder, BuilderOptions
from tests.support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "local" / "kaito_workspace_tiny_llama.yaml"
TOOLS = ("buildah", "podman", "catatonit", "debootstrap", "runc")


@pytest.fixture(scope="module")
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


def kaito_run(storage: BuilderOptions, port: int) -> subprocess.Popen:
    env = {**os.environ, "KAITO_BUILDER_ROOT": str(storage.root), "KAITO_STORAGE_DRIVER": storage.storage_driver,
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", "-f", str(EXAMPLE), "--local",
                             "--engine", "podman", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def pod_left(storage: BuilderOptions) -> bool:
    return subprocess.run(["podman", *storage.storage_flags(), "pod", "exists", "workspace-tiny-llama"]).returncode == 0


def test_an_example_workspace_plays_as_rendered_and_serves(storage):
    port = free_port()
    proc = kaito_run(storage, port)
    url = f"http://127.0.0.1:{port}"
    lines = []
    try:
        # Wait as a user does: for `kaito run` to say it is ready (it polls the readiness probe itself).
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(f"ready: {url}"):
                break
        else:
            pytest.fail("kaito run ended before it was ready:\n" + "".join(lines)[-3000:])
        assert httpx.get(url + "/v1/health/ready").status_code == 200
        reply = httpx.post(url + "/chat", json={"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 4}},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["Result"].startswith("Hello")
        from openai import OpenAI

        answer = OpenAI(base_url=url + "/v1", api_key="unused").chat.completions.create(
            model="tiny-llama", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert answer.usage.completion_tokens > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "playing workspace-tiny-llama with podman kube play" in output and f"ready: {url}" in output
    assert "HTTP Request" not in output  # the readiness polls are not logged
    assert not pod_left(storage)  # stopping removed everything it started


def test_sigterm_while_the_pod_starts_removes_it_too(storage):
    """Found by CI: a SIGTERM before the server was ready killed `kaito run` and left the pod running."""
    proc = kaito_run(storage, free_port())
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("started;"):  # podman has played the pod; the model is still loading
            break
    proc.send_signal(signal.SIGTERM)
    output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "ready:" not in output
    assert not pod_left(storage)
