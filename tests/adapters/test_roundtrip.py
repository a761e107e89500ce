"""Push and pull against a real `docker-registry` on loopback; skopeo as the independent judge of "an image"."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile

import httpx
import pytest

from runtime.adapters.image import OCI_MANIFEST, adapter_annotations, pack_adapter
from runtime.adapters.oci import DigestMismatchError, NotFoundError, RegistryError, pull, push_adapter
from runtime.adapters.registry import RegistryClient
from tests.adapters.conftest import make_adapter

pytestmark = pytest.mark.registry

ANNOTATIONS = adapter_annotations("tiny-llama", "local", "lora")


def _same_files(a, b) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in ("adapter_config.json", "adapter_model.safetensors"))


def test_round_trip_with_digest_check(registry, adapter_dir, tmp_path):
    ref = registry.ref("adapters/roundtrip", "v1")
    digest = push_adapter(adapter_dir, ref, annotations=ANNOTATIONS)
    assert digest == pack_adapter(adapter_dir, ANNOTATIONS).manifest_digest  # reproducible: local == pushed
    # The registry's own view of the manifest.
    response = httpx.get(f"{registry.url}/v2/adapters/roundtrip/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert response.headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    assert json.loads(response.content)["annotations"]["sh.kaito.model.name"] == "tiny-llama"

    out = pull(f"oci://{ref}", tmp_path / "pulled" / "france")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert _same_files(adapter_dir, out)
    by_digest = pull(f"{registry.host}/adapters/roundtrip@{digest}", tmp_path / "by-digest")
    assert _same_files(adapter_dir, by_digest)


def test_pushing_again_reuses_blobs_and_gives_the_same_digest(registry, adapter_dir):
    ref = registry.ref("adapters/again", "v1")
    assert push_adapter(adapter_dir, ref) == push_adapter(adapter_dir, registry.ref("adapters/again", "v2"))


def test_chunked_upload_of_a_large_blob(registry, adapter_dir, tmp_path):
    ref = registry.ref("adapters/chunked", "v1")
    push_adapter(adapter_dir, ref, chunk_size=8 * 1024)  # ~30 KB layer -> several PATCH requests
    assert _same_files(adapter_dir, pull(ref, tmp_path / "out"))


def test_skopeo_sees_an_image_and_copies_it(registry, adapter_dir, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    ref = registry.ref("adapters/skopeo", "v1")
    digest = push_adapter(adapter_dir, ref, annotations=ANNOTATIONS)
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True, text=True, check=True
    )
    info = json.loads(inspect.stdout)
    assert info["Digest"] == digest
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert info["Labels"]["sh.kaito.model.name"] == "tiny-llama"
    assert len(info["Layers"]) == 1
    layout = tmp_path / "oci"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1"], capture_output=True,
        check=True,
    )  # fmt: skip
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    with tarfile.open(layer) as tar:
        assert {"data/adapter_config.json", "data/adapter_model.safetensors"} <= set(tar.getnames())


def test_pull_refuses_a_corrupted_blob(registry, tmp_path):
    # Blobs are shared across repositories: corrupt one no other test pushes.
    adapter_dir = make_adapter(tmp_path / "to-corrupt", seed=7)
    ref = registry.ref("adapters/corrupt", "v1")
    push_adapter(adapter_dir, ref)
    layer_hex = pack_adapter(adapter_dir).layer_digest[7:]
    stored = registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / layer_hex[:2] / layer_hex / "data"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte on the registry's disk
    stored.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="does not match the manifest"):
        pull(ref, tmp_path / "out")
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_pull_errors_name_the_problem(registry, tmp_path):
    with pytest.raises(NotFoundError, match="adapters/nothing:v9"):
        pull(registry.ref("adapters/nothing", "v9"), tmp_path / "out")
    # An image without the /data files is not an adapter image.
    with RegistryClient(registry.host, actions=("pull", "push")) as client:
        tar_path = tmp_path / "other.tar"
        (tmp_path / "hello.txt").write_text("hi")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(tmp_path / "hello.txt", arcname="hello.txt")
        layer = tar_path.read_bytes()
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
            "digest": client.upload_blob("other/image", config)}, "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer),
            "digest": client.upload_blob("other/image", layer)}]}).encode()  # fmt: skip
        client.put_manifest("other/image", "v1", manifest, OCI_MANIFEST)
    with pytest.raises(RegistryError, match=r"not an adapter image: no /data/adapter_config.json"):
        pull(registry.ref("other/image", "v1"), tmp_path / "out2")


def test_pull_reads_docker_v2_manifests_and_image_indexes(registry, adapter_dir, tmp_path):
    """Kaito's older adapter images were `docker build` + `docker push` (Docker v2 media types); multi-platform
    pushes make an index. skopeo converts ours to Docker v2; an OCI index is written by hand."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    from runtime.adapters.oci import write_oci_layout

    packed = pack_adapter(adapter_dir)
    layout = write_oci_layout(packed, tmp_path / "layout", tag="v1")
    ref = registry.ref("adapters/dockerv2", "v1")
    subprocess.run(
        ["skopeo", "copy", "--format", "v2s2", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{ref}"],
        check=True, capture_output=True,
    )  # fmt: skip
    manifest = httpx.get(f"{registry.url}/v2/adapters/dockerv2/manifests/v1",
                         headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert _same_files(adapter_dir, pull(ref, tmp_path / "from-docker-v2"))

    digest = push_adapter(adapter_dir, registry.ref("adapters/indexed", "single"))
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(packed.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()  # fmt: skip
    with RegistryClient(registry.host, actions=("pull", "push")) as client:
        client.put_manifest("adapters/indexed", "multi", index, "application/vnd.oci.image.index.v1+json")
    assert _same_files(adapter_dir, pull(registry.ref("adapters/indexed", "multi"), tmp_path / "from-index"))
