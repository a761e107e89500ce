"""Adapter images, the public API: push an adapter directory as an image, pull one into a directory.

    digest = push_adapter(Path("out"), "myacr.azurecr.io/adapters/france:v1", annotations=adapter_annotations(...))
    pull("oci://myacr.azurecr.io/adapters/france:v1", Path("/mnt/adapter/france"))

Used by the trainer (`kaito tune --output-image`), the sidecar pusher (`kaito adapter push --wait-for`), the
init-container puller (`kaito adapter pull`) and the inference server's hot-load (`lora_path="oci://..."`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from runtime.adapters import credentials as creds
from runtime.adapters.image import (
    ADAPTER_FILES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    PackedAdapter,
    adapter_annotations,
    canonical_json,
    extract_adapter_files,
    pack_adapter,
)
from runtime.adapters.registry import (
    DEFAULT_CHUNK_SIZE,
    AuthenticationError,
    DigestMismatchError,
    NotFoundError,
    Reference,
    RegistryClient,
    RegistryError,
)

__all__ = [
    "AuthenticationError",
    "DigestMismatchError",
    "NotFoundError",
    "PackedAdapter",
    "Reference",
    "RegistryError",
    "adapter_annotations",
    "pack_adapter",
    "pull",
    "push_adapter",
    "write_oci_layout",
]

log = logging.getLogger(__name__)

Auth = creds.Credentials | tuple[str, str] | None


def push_adapter(
    adapter_dir: Path,
    ref: str,
    *,
    annotations: Mapping[str, str] | None = None,
    auth: Auth = None,
    insecure: bool = False,
    docker_config: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> str:
    """Pack `adapter_dir` (adapter_config.json + adapter_model.safetensors) and push it to `ref`.

    Returns the manifest digest (`sha256:...`). Credentials: `auth`, else `docker_config`, else the
    environment, else the default docker config (see credentials.resolve). The adapter files are only read.
    """
    reference = Reference.parse(ref)
    if reference.digest:
        raise ValueError(f"image reference {ref!r}: push to a tag, not a digest")
    packed = pack_adapter(Path(adapter_dir), annotations)
    credentials = creds.resolve(reference.host, auth, docker_config)
    with RegistryClient(
        reference.endpoint_host, credentials, insecure=insecure, actions=("pull", "push"), chunk_size=chunk_size
    ) as client:
        client.upload_blob(reference.repository, packed.layer, packed.layer_digest)
        client.upload_blob(reference.repository, packed.config, packed.config_digest)
        digest = client.put_manifest(reference.repository, reference.tag, packed.manifest, OCI_MANIFEST)
    log.info("pushed %s@%s", reference, digest)
    return digest


def _select_manifest(client: RegistryClient, reference: Reference) -> dict:
    body, media_type, _ = client.get_manifest(reference.repository, reference.reference)
    document = json.loads(body)
    if media_type in INDEX_TYPES:
        entries = document.get("manifests") or []
        if not entries:
            raise RegistryError(f"{reference}: the image index lists no manifests")
        # An adapter is architecture-free; prefer linux/amd64 when an index offers several.
        chosen = next(
            (m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"), entries[0]
        )
        body, media_type, _ = client.get_manifest(reference.repository, chosen["digest"])
        document = json.loads(body)
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(f"{reference}: unsupported manifest media type {media_type!r}")
    return document


def pull(ref: str, dest: Path, *, insecure: bool = False, docker_config: Path | None = None, auth: Auth = None) -> Path:
    """Pull the adapter image `ref` (`HOST/REPO:TAG`, `HOST/REPO@sha256:...`, optionally `oci://`-prefixed) and
    write adapter_config.json and adapter_model.safetensors into `dest` (created if needed). Returns `dest`.

    Every blob's digest is checked. The files appear in `dest` only once both are complete (they are staged in a
    temporary directory beside `dest`, then moved), so a reader never sees half an adapter.
    """
    reference = Reference.parse(ref)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    credentials = creds.resolve(reference.host, auth, docker_config)
    with (
        RegistryClient(reference.endpoint_host, credentials, insecure=insecure) as client,
        tempfile.TemporaryDirectory(prefix=".pull-", dir=dest) as staging,
    ):
        manifest = _select_manifest(client, reference)
        staging_dir = Path(staging)
        found: set[str] = set()
        for index, layer in enumerate(manifest.get("layers") or []):
            blob = client.download_blob(reference.repository, layer["digest"], staging_dir / f"layer-{index}", layer.get("size"))
            found.update(extract_adapter_files(blob, layer.get("mediaType", ""), staging_dir))
            blob.unlink()
        missing = [name for name in ADAPTER_FILES if name not in found]
        if missing:
            raise RegistryError(
                f"{reference} is not an adapter image: no /data/{' or /data/'.join(missing)} in its layers "
                f"(an adapter image holds /data/{' and /data/'.join(ADAPTER_FILES)})"
            )
        for name in ADAPTER_FILES:
            os.replace(staging_dir / name, dest / name)
    log.info("pulled %s into %s", reference, dest)
    return dest


def write_oci_layout(packed: PackedAdapter, out: Path, tag: str = "latest") -> Path:
    """Write an image as an OCI image layout: a directory, or a tar of one (an `oci-archive`) if `out` ends in .tar.

    skopeo reads both (`oci:DIR:TAG`, `oci-archive:FILE.tar:TAG`), so an adapter can be packed offline and copied
    to a registry later.
    """
    out = Path(out)
    as_tar = out.suffix == ".tar"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "layout" if as_tar else out
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for data, digest in (
            (packed.layer, packed.layer_digest),
            (packed.config, packed.config_digest),
            (packed.manifest, packed.manifest_digest),
        ):
            (blobs / digest.split(":", 1)[1]).write_bytes(data)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        descriptor = {
            "mediaType": OCI_MANIFEST,
            "digest": packed.manifest_digest,
            "size": len(packed.manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
        (root / "index.json").write_bytes(canonical_json(index))
        if as_tar:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.make_archive(str(out.with_suffix("")), "tar", root_dir=root)
    return out
