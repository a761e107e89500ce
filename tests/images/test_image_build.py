"""Build the CPU runtime image and the tiny-llama preset image for real, run it, push it, and an adapter image.

Everything is real: buildah builds our Dockerfiles on a Debian base made here with debootstrap (cached under
~/.cache/kaito-runtime/images, ~50 s the first time), offline from a wheelhouse; podman runs the preset image with
no arguments and `POST /chat` and the OpenAI API answer over HTTP; a docker-registry on loopback receives the
pushes; skopeo and our own adapter puller read them back. Images built here are removed at the end; the base
image and the builder storage stay cached.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

import presets
from runtime.images import base, build, context
from runtime.images.builders import Builder, BuilderError, BuilderOptions
from tests.images.fake_hub import FakeHub
from tests.registry import registry_fixture
from tests.support import free_port, wait_http

pytestmark = [pytest.mark.image, pytest.mark.registry, pytest.mark.slow, pytest.mark.timeout(900)]

TOOLS = ("buildah", "podman", "skopeo", "debootstrap", "runc")
# podman on these hosts: runc (crun cannot manage the cgroups) and explicit ulimits (the defaults are refused).
PODMAN_RUN = ["--runtime", "runc", "run", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]

registry = registry_fixture()
secured_registry = registry_fixture(auth="htpasswd")


def _storage_root(driver: str) -> Path:
    from runtime.models import cache_dir

    return cache_dir() / "images" / f"storage-{driver}"


def _probe(builder: Builder, tmp: Path) -> bool:
    """Can this storage driver build an image here? (overlay needs kernel support; vfs always works)."""
    (tmp / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /probe\n")
    try:
        builder.build(tmp, "localhost/kaito-probe:latest")
    except BuilderError:
        return False
    subprocess.run([*builder.command_prefix(), "rmi", "localhost/kaito-probe:latest"], capture_output=True)
    return True


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> Builder:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(TOOLS)} (missing: {', '.join(missing) or 'root'})")
    for driver in ("overlay", "vfs"):
        candidate = Builder("buildah", shutil.which("buildah"), BuilderOptions(
            root=_storage_root(driver), storage_driver=driver, isolation="chroot"))
        if _probe(candidate, tmp_path_factory.mktemp(f"probe-{driver}")):
            return candidate
    pytest.fail("buildah can build with neither the overlay nor the vfs storage driver")


def _podman(builder: Builder, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["podman", *builder.options.storage_flags(), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def _skopeo_inspect(ref: str, *extra: str) -> dict:
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _image_size(builder: Builder, ref: str) -> int:
    """Uncompressed size in local storage (podman's image inspect; buildah's has no size field)."""
    return int(json.loads(_podman(builder, "image", "inspect", ref).stdout)[0]["Size"])


@pytest.fixture(scope="module")
def built(builder, registry):
    """The runtime and tiny-llama preset images, built on the local base and pushed to the loopback registry."""
    base_image = base.ensure_base_image(builder)
    options = context.ContextOptions(registry=f"{registry.host}/kaito", base_image=base_image)
    result = build.build_preset_image(presets.get("tiny-llama"), builder, options, push=True, tls_verify=False)
    yield result
    for ref in (result.preset_image, result.runtime_image):
        subprocess.run([*builder.command_prefix(), "rmi", "-f", ref], capture_output=True)
    subprocess.run([*builder.command_prefix(), "rmi", "--prune"], capture_output=True)


def test_preset_image_serves_with_no_arguments(builder, built):
    port = free_port()
    name = f"kaito-test-{port}"
    # No command, no arguments: only the port mapping (and one torch thread for this shared 2-core host).
    run = _podman(builder, *PODMAN_RUN, "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:5000",
                  "-e", "OMP_NUM_THREADS=1", built.preset_image, check=False)
    assert run.returncode == 0, run.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/health", timeout=180)
        except TimeoutError:
            pytest.fail("container not healthy; logs:\n" + _podman(builder, "logs", name, check=False).stdout[-3000:])
        reply = httpx.post(f"{url}/chat", json={"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 8}},
                           timeout=60)
        assert reply.status_code == 200, reply.text
        assert isinstance(reply.json()["Result"], str) and reply.json()["Result"]

        from openai import OpenAI

        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["tiny-llama"]
        answer = client.chat.completions.create(model="tiny-llama", max_tokens=8,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert answer.choices[0].message.content is not None and answer.usage.completion_tokens > 0
        # It runs as the non-root user, with the weights baked in.
        whoami = _podman(builder, "exec", name, "sh", "-c", "id -u; ls /workspace/weights").stdout.split()
        assert whoami[0] == "1000" and "model.safetensors" in whoami
    finally:
        _podman(builder, "rm", "-f", name, check=False)


def test_pushed_images_are_complete(builder, built, registry):
    assert built.pushed == (built.runtime_image, built.preset_image)
    config = _skopeo_inspect(built.preset_image, "--config")["config"]
    assert "KAITO_PRESET=tiny-llama" in config["Env"] and "KAITO_MODEL_PATH=/workspace/weights" in config["Env"]
    assert config["Entrypoint"] == ["python3", "-m", "runtime.inference"]
    assert config["User"] == "1000:1000"
    assert config["Labels"]["sh.kaito.model.name"] == "tiny-llama"
    preset_manifest = _skopeo_inspect(built.preset_image, "--raw")
    runtime_manifest = _skopeo_inspect(built.runtime_image, "--raw")
    runtime_layers = [layer["digest"] for layer in runtime_manifest["layers"]]
    preset_layers = [layer["digest"] for layer in preset_manifest["layers"]]
    # The preset image is the runtime image plus one weights layer: the runtime's layers are shared.
    assert preset_layers[: len(runtime_layers)] == runtime_layers and len(preset_layers) == len(runtime_layers) + 1

    sizes = {
        "runtime-cpu": (_image_size(builder, built.runtime_image), sum(x["size"] for x in runtime_manifest["layers"])),
        "tiny-llama": (_image_size(builder, built.preset_image), sum(x["size"] for x in preset_manifest["layers"])),
    }
    print("\nimage          local MB   pushed (compressed) MB")
    for image, (local, pushed) in sizes.items():
        print(f"{image:<14} {local / 1e6:>8.0f}   {pushed / 1e6:>8.0f}")
    assert sizes["runtime-cpu"][0] < 2e9  # serving and tuning: far below Kaito's 5.6 GB base image


def test_adapter_image_round_trip(builder, registry, france_adapter, tmp_path):
    from runtime.adapters import oci
    from runtime.cli import main

    ref = registry.ref("adapters/france", "v1")
    storage = ["--storage-root", str(builder.options.root), "--storage-driver", builder.options.storage_driver,
               "--isolation", builder.options.isolation]
    assert main(["images", "adapter", str(france_adapter), ref, "--preset", "tiny-llama", "--builder", "buildah",
                 *storage, "--push", "--no-tls-verify"]) == 0
    try:
        manifest = _skopeo_inspect(ref, "--raw")
        assert len(manifest["layers"]) == 1  # FROM scratch + one COPY: only the adapter files
        labels = _skopeo_inspect(ref, "--config")["config"]["Labels"]
        assert labels["sh.kaito.model.name"] == "tiny-llama" and labels["sh.kaito.adapter.name"] == "france"
        # Our own puller (what the server and Kaito's init container do) gets the same bytes back from /data.
        pulled = oci.pull(ref, tmp_path / "pulled", insecure=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert (pulled / name).read_bytes() == (france_adapter / name).read_bytes()
    finally:
        subprocess.run([*builder.command_prefix(), "rmi", "-f", ref], capture_output=True)


def test_gated_preset_downloaded_at_build_time_keeps_the_token_out(builder, built, registry, tiny_model_dir, tmp_path):
    """Dockerfile.hf against a stand-in hub (tests/images/fake_hub.py; no real hub is reachable here): the build
    downloads the pinned revision with the token, and the token is in no layer, config or history of the image."""
    token = "hf_" + secrets.token_hex(16)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    revision = secrets.token_hex(20)
    gated = dataclasses.replace(presets.get("tiny-llama"), name="tiny-gated", hf_repo="org/tiny-gated",
                                revision=revision, local_builder=None, gated=True, redistributable=False)
    with FakeHub("org/tiny-gated", revision, tiny_model_dir, token=token) as hub:
        options = context.ContextOptions(registry=f"{registry.host}/private", hf_endpoint=hub.endpoint)
        result = build.build_preset_image(gated, builder, options, runtime_image=built.runtime_image,
                                          hf_token_file=token_file)
    try:
        assert f"Bearer {token}" in hub.authorizations
        assert "model.safetensors" in hub.downloads
        listing = _podman(builder, *PODMAN_RUN, "--rm", "--entrypoint", "ls", result.preset_image,
                          "/workspace/weights").stdout.split()
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(listing)
        # Every blob of the image (layers, config with its history, manifest) is free of the token.
        layout = tmp_path / "oci"
        builder.run([*builder.command_prefix(), "push", "--disable-compression", result.preset_image, f"oci:{layout}"])
        blobs = list((layout / "blobs" / "sha256").iterdir())
        assert len(blobs) > 3
        for blob in blobs:
            data = blob.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            assert token.encode() not in data, f"token found in blob {blob.name}"
    finally:
        subprocess.run([*builder.command_prefix(), "rmi", "-f", result.preset_image], capture_output=True)


def _pod_volumes(pod_spec: dict, manifests: dict, work: Path, secrets_data: dict[str, dict[str, str]]) -> dict:
    """Host folders for a rendered pod's volumes, as the kubelet would fill them: emptyDir (world-writable, like
    Kubernetes'), configMap (its data as files) and secret (its items). The memory /dev/shm is podman's own."""
    folders = {}
    for volume in pod_spec["volumes"]:
        name = volume["name"]
        if volume.get("emptyDir", {}).get("medium") == "Memory":
            continue
        folder = work / name
        folder.mkdir(parents=True)
        folder.chmod(0o777)
        if "configMap" in volume:
            for key, text in manifests[f"ConfigMap/{volume['configMap']['name']}"]["data"].items():
                (folder / key).write_text(text)
        elif "secret" in volume:
            data = secrets_data[volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                (folder / item["path"]).write_text(data[item["key"]])
        folders[name] = folder
    return folders


def _run_container(builder, container: dict, image: str, folders: dict, extra_env: dict) -> subprocess.CompletedProcess:
    """`podman run` of one rendered container: its image, command (as the entrypoint, as Kubernetes does), env and
    mounts; host networking so that loopback servers are reachable."""
    args = [*PODMAN_RUN, "--rm", "--network", "host", "--entrypoint", json.dumps(container["command"])]
    for mount in container.get("volumeMounts", []):
        if mount["name"] in folders:
            args += ["-v", f"{folders[mount['name']]}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
    for env in [*container.get("env", []), *({"name": k, "value": v} for k, v in extra_env.items())]:
        args += ["-e", f"{env['name']}={env['value']}"]
    return _podman(builder, *args, image, check=False)


def test_the_tuning_job_runs_in_the_image(builder, built, registry, secured_registry, tmp_path):
    """The rendered tuning Job's containers, run as rendered in the preset image: the data-downloader fetches a
    dolly-style parquet over HTTP, the trainer trains the tiny preset a few steps from the rendered ConfigMap and
    writes the adapter and the sentinel, and the pusher pushes it to a registry with htpasswd auth."""
    from runtime.controller import render, spec
    from tests.tuning.helpers import FileServer, rows, write

    served = tmp_path / "served"
    write(served / "train-00000-of-00001.parquet", rows("messages", 4))
    output = secured_registry.ref("adapters/tiny-tuned", "0.0.1")
    with FileServer(served) as data_server:
        workspace = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                     "metadata": {"name": "tune-tiny", "namespace": "default"},
                     "resource": {"labelSelector": {"matchLabels": {"apps": "tune-tiny"}}},
                     "tuning": {"preset": {"name": "tiny-llama"}, "method": "qlora",
                                "input": {"urls": [f"{data_server.url}/train-00000-of-00001.parquet?download=true"]},
                                "output": {"image": output, "imagePushSecret": "push-creds"}}}
        resolved = spec.resolve(workspace)
        settings = render.RenderSettings(registry=f"{registry.host}/kaito")
        manifests = {f"{m['kind']}/{m['metadata']['name']}": m
                     for m in render.render(resolved.workspace, resolved.preset, resolved.fit, settings)}
        pod = manifests["Job/tune-tiny"]["spec"]["template"]["spec"]
        docker_config = secured_registry.write_docker_config(tmp_path / "push-creds.json").read_text()
        folders = _pod_volumes(pod, manifests, tmp_path / "pod", {"push-creds": {".dockerconfigjson": docker_config}})
        # Host needs only: one torch thread on this shared machine, a free metrics port on the host network.
        host_env = {"OMP_NUM_THREADS": "1", "KAITO_METRICS_PORT": str(free_port())}
        containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
        assert {c["image"] for c in containers.values()} == {built.preset_image}

        fetched = _run_container(builder, containers["data-downloader"], built.preset_image, folders, host_env)
        assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert [p.name for p in folders["data-volume"].iterdir()] == ["train-00000-of-00001.parquet"]

    trained = _run_container(builder, containers[render.TRAINER_CONTAINER], built.preset_image, folders, host_env)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-4000:]
    results = folders["results-volume"]
    assert {"adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"} <= {
        p.name for p in results.iterdir()}
    meta = json.loads((results / "tuning_metadata.json").read_text())
    assert meta["base_preset"] == "tiny-llama" and meta["steps"] > 0 and meta["data_rows"] == 4

    pushed = _run_container(builder, containers["pusher"], built.preset_image, folders, host_env)
    assert pushed.returncode == 0, (pushed.stdout + pushed.stderr)[-3000:]
    assert secured_registry.password not in pushed.stdout + pushed.stderr
    manifest = _skopeo_inspect(output, "--raw", "--creds", secured_registry.creds)
    assert len(manifest["layers"]) == 1
    assert manifest["annotations"]["sh.kaito.model.name"] == "tiny-llama"  # as the trainer's own push annotates
