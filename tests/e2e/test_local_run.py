"""`kaito run --local --engine podman`: an example Workspace's rendered pod, played by `podman kube play`, serving.

Real parts: the tiny preset's image built with buildah on the local debootstrap base (kept in the image tier's
storage between runs, so only the first run builds it), podman 4.3's kube play with catatonit and runc, a registry
on loopback with htpasswd auth (Debian's docker-registry) that the adapter-pull init container reaches with the
`-f` Secret named by `imagePullSecrets`, HTTP and the `openai` client against the published port.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

import presets
from runtime.controller import render
from runtime.controller.play import state_dir
from tests.e2e.helpers import EXAMPLE, kaito, kaito_run, pod_left, podman_objects, pull_secret, until_ready, workspace
from tests.support import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

def test_an_example_workspace_plays_detached_serves_and_goes_down(storage):
    before = podman_objects(storage)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        run = kaito(storage, "run", "-f", str(EXAMPLE), "--local", "--detach", "--port", str(port))
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0, output[-3000:]
        assert "playing workspace-tiny-llama with podman kube play" in output and f"ready: {url}" in output
        assert "  workspace-tiny-llama: running" in output  # the progress: each container's state
        assert "HTTP Request" not in output  # the readiness polls are not logged
        assert httpx.get(url + "/v1/health/ready").status_code == 200  # detached: it still serves
        reply = httpx.post(url + "/chat", json={"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 4}},
                           timeout=60)
        assert reply.status_code == 200 and reply.json()["Result"].startswith("Hello")
        from openai import OpenAI

        answer = OpenAI(base_url=url + "/v1", api_key="unused").chat.completions.create(
            model="tiny-llama", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
        assert answer.usage.completion_tokens > 0
    finally:
        down = kaito(storage, "down", "-f", str(EXAMPLE))
        output = down.communicate(timeout=120)[0]
    assert down.returncode == 0 and "removed pod workspace-tiny-llama" in output, output
    assert podman_objects(storage) == before  # no pod, container or volume left behind
    assert not state_dir("workspace-tiny-llama").exists()


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


@pytest.fixture(scope="module")
def adapter_image(secured_registry, france_adapter) -> str:
    """The France LoRA as an adapter image in the registry with htpasswd auth."""
    from runtime.adapters import oci

    ref = secured_registry.ref("adapters/france", "v1")
    oci.push_adapter(france_adapter, ref, auth=(secured_registry.username, secured_registry.password))
    return ref


def workspace_with_adapter(tmp_path: Path, adapter: str, registry, password: str) -> tuple[Path, Path]:
    """The tiny example naming `adapter` with imagePullSecrets, and its pull Secret holding `password`."""
    adapters = [{"source": {"name": "france", "image": adapter, "imagePullSecrets": ["registry-creds"]},
                 "strength": "1.0"}]
    return workspace(tmp_path, adapters=adapters), pull_secret(tmp_path, registry, password)


def test_the_adapter_pull_uses_the_pull_secret_given_with_f(storage, secured_registry, adapter_image, tmp_path):
    files = workspace_with_adapter(tmp_path, adapter_image, secured_registry, secured_registry.password)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = kaito_run(storage, port, *files)
    lines = []
    try:
        lines = until_ready(proc, url)
        models = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
        assert "france" in models, models
    finally:
        proc.send_signal(signal.SIGTERM)
        output = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert secured_registry.password not in output
    assert not pod_left(storage)


def test_a_wrong_pull_password_fails_the_run_with_the_registrys_refusal(storage, secured_registry, adapter_image,
                                                                         tmp_path):
    wrong = "not-the-password-" + secured_registry.password[:4]
    proc = kaito_run(storage, free_port(), *workspace_with_adapter(tmp_path, adapter_image, secured_registry, wrong))
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output[-3000:]
    assert "container workspace-tiny-llama-puller-france failed" in output, output[-3000:]
    assert "401" in output or "unauthorized" in output.lower(), output[-3000:]
    assert wrong not in output and secured_registry.password not in output
    assert "ready:" not in output
    assert not pod_left(storage)


def test_a_missing_image_is_named_and_build_makes_it(storage):
    """Without --build a missing preset image is an error naming it and the fix; with --build it is built on the
    local base (here under a registry prefix of its own, removed afterwards) and the pod plays."""
    registry = "localhost/kaito-e2e-build"
    image = f"{registry}/kaito-tiny-llama:{presets.get('tiny-llama').image_tag}"
    flags = storage.storage_flags()
    env = {"PRESET_REGISTRY_NAME": registry}  # read by kaito run's render and by its build
    try:
        port = free_port()
        missing = kaito(storage, "run", "-f", str(EXAMPLE), "--local", "--detach", "--port", str(port), env=env)
        output = missing.communicate(timeout=120)[0]
        assert missing.returncode == 2, output
        assert f"pulling {image}" in output  # not in the store: tried as kubectl would, then named with its fixes
        assert f"image {image} is not in the local image store and could not be pulled (" in output
        assert "): add --build to build it first, or build it with `kaito images build" in output
        built = kaito(storage, "run", "-f", str(EXAMPLE), "--local", "--detach", "--build", "--port", str(port),
                      env=env)
        output = built.communicate(timeout=600)[0]
        assert built.returncode == 0, output[-3000:]
        assert f"built {image}" in output and f"playing workspace-tiny-llama with podman kube play ({image})" in output
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health/ready").status_code == 200
    finally:
        kaito(storage, "down", "-f", str(EXAMPLE)).communicate(timeout=120)
        listed = subprocess.run(["podman", *flags, "images", "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True).stdout.split()
        ours = [ref for ref in listed if ref.startswith(registry + "/")]  # the preset image and its runtime image
        subprocess.run(["podman", *flags, "rmi", "--force", *ours], capture_output=True)
    assert not pod_left(storage)


def test_a_missing_image_is_pulled_with_the_pull_secret(storage, secured_registry, tmp_path):
    """The preset image, pushed to the registry with htpasswd auth, is not in the store: the pod's
    `presetOptions.imagePullSecrets` Secret, given with -f, pulls it, and the pod plays."""
    flags = storage.storage_flags()
    local = render.preset_image(presets.get("tiny-llama"), render.RenderSettings())
    remote = secured_registry.ref("kaito-tiny-llama", "e2e-pull")
    pushed = subprocess.run(["podman", *flags, "push", "--quiet", "--tls-verify=false", "--creds",
                             secured_registry.creds, local, f"docker://{remote}"], capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    preset = {"name": "tiny-llama", "presetOptions": {"imagePullSecrets": ["registry-creds"]}}
    files = workspace(tmp_path, preset=preset), pull_secret(tmp_path, secured_registry, secured_registry.password)
    port = free_port()
    try:
        run = kaito(storage, "run", "-f", str(files[0]), "-f", str(files[1]), "--local", "--detach", "--image",
                    remote, "--port", str(port))
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0, output[-3000:]
        assert f"pulling {remote}" in output and f"ready: http://127.0.0.1:{port}" in output
        assert secured_registry.password not in output
    finally:
        kaito(storage, "down", "-f", str(files[0])).communicate(timeout=120)
        subprocess.run(["podman", *flags, "rmi", "--force", remote], capture_output=True)
    assert not pod_left(storage)
