"""Kaito's adapter image layout: pack an adapter directory into one reproducible OCI image layer, and unpack it.

An adapter image is any OCI image whose filesystem holds `/data/adapter_config.json` and
`/data/adapter_model.safetensors` (Kaito's `pkg/workspace/image/README.md`); Kaito's pusher builds it as one
gzipped tar layer, a config `{"rootfs": {"diff_ids": [...]}}` and an OCI manifest annotated
`sh.kaito.model.name=<preset>`. We build the same, reproducibly: tar entries sorted, mtime 0, uid/gid 0, no
user names, gzip header mtime 0 and no file name, JSON with sorted keys. Same files and annotations, same
digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.kaito import ADAPTER_FILES, ADAPTER_IMAGE_DATA_DIR

# The files an adapter image carries, under DATA_DIR (Kaito's layout).
DATA_DIR = ADAPTER_IMAGE_DATA_DIR

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
GZIP_LAYER_TYPES = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP)
TAR_LAYER_TYPES = (OCI_LAYER_TAR, "application/vnd.docker.image.rootfs.diff.tar")

# Annotation keys. sh.kaito.model.name is the one Kaito's pusher writes; the others follow its naming.
ANNOTATION_PRESET = "sh.kaito.model.name"
ANNOTATION_REVISION = "sh.kaito.model.revision"
ANNOTATION_METHOD = "sh.kaito.tuning.method"
ANNOTATION_TITLE = "org.opencontainers.image.title"

GZIP_LEVEL = 1
"""Fixed, so that the digest is reproducible. Weights barely compress: on 16 MiB of random bf16 (CPU time, zlib),
level 1 ran at 38 MiB/s for ratio 0.800, levels 6 and 9 (Kaito's pusher uses -9) at 12.5 MiB/s for 0.792."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PackedAdapter:
    """The three blobs of an adapter image, ready to push or to write to an OCI layout."""

    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def layer_digest(self) -> str:
        return sha256_digest(self.layer)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    def __iter__(self):  # so that `layer, config, manifest = pack_adapter(d)` works
        return iter((self.layer, self.config, self.manifest))


def adapter_annotations(
    preset: str | None = None, revision: str | None = None, method: str | None = None
) -> dict[str, str]:
    """The manifest annotations for an adapter of `preset` (base model revision `revision`, tuned by `method`)."""
    annotations = {}
    if preset:
        annotations[ANNOTATION_PRESET] = preset
        annotations[ANNOTATION_TITLE] = f"{preset} {method or 'lora'} adapter"
    if revision:
        annotations[ANNOTATION_REVISION] = revision
    if method:
        annotations[ANNOTATION_METHOD] = method
    return annotations


def check_adapter_dir(adapter_dir: Path) -> Path:
    """Return `adapter_dir` if it holds both adapter files, else raise FileNotFoundError naming what is missing."""
    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"adapter directory {adapter_dir} does not exist")
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"adapter directory {adapter_dir} lacks {', '.join(missing)} (an adapter needs {' and '.join(ADAPTER_FILES)})"
        )
    return adapter_dir


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def build_layer_tar(adapter_dir: Path) -> bytes:
    """The uncompressed layer: `data/` plus the two adapter files, in a fixed order with fixed metadata."""
    adapter_dir = check_adapter_dir(adapter_dir)
    buffer = io.BytesIO()
    # PAX: no 8 GiB member limit; for ordinary sizes it writes plain ustar headers, so bytes stay stable.
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(f"{DATA_DIR}/", directory=True))
        for name in sorted(ADAPTER_FILES):
            path = adapter_dir / name
            with path.open("rb") as fh:
                tar.addfile(_tar_info(f"{DATA_DIR}/{name}", size=path.stat().st_size), fh)
    return buffer.getvalue()


def gzip_reproducibly(data: bytes) -> bytes:
    buffer = io.BytesIO()
    # mtime=0 and a nameless file object: the gzip header then carries no time stamp and no file name.
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def pack_adapter(adapter_dir: Path, annotations: Mapping[str, str] | None = None) -> PackedAdapter:
    """Pack `adapter_dir` into (layer, config, manifest) bytes: a one-layer OCI image in Kaito's layout."""
    tar_bytes = build_layer_tar(adapter_dir)
    layer = gzip_reproducibly(tar_bytes)
    annotations = dict(sorted((annotations or {}).items()))
    config = canonical_json(
        {
            # An adapter is architecture-free; amd64/linux is what `docker build FROM scratch` would record,
            # and it keeps podman and skopeo from refusing the image for lack of a platform.
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": annotations} if annotations else {},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar_bytes)]},
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256_digest(layer), "size": len(layer)}],
    }
    if annotations:
        manifest["annotations"] = annotations
    return PackedAdapter(layer=layer, config=config, manifest=canonical_json(manifest))


def _adapter_file_name(member_name: str) -> str | None:
    """`data/adapter_config.json`, `./data/...` or `/data/...` -> `adapter_config.json`; anything else -> None."""
    parts = [p for p in member_name.split("/") if p not in ("", ".")]
    if len(parts) == 2 and parts[0] == DATA_DIR and parts[1] in ADAPTER_FILES:
        return parts[1]
    return None


def extract_adapter_files(layer_path: Path, media_type: str, dest: Path) -> list[str]:
    """Write the adapter files found in one layer blob into `dest`; return their names.

    Only regular files named exactly data/adapter_config.json or data/adapter_model.safetensors are written,
    by their base name, so a hostile layer cannot write outside `dest`.
    """
    if media_type in GZIP_LAYER_TYPES:
        mode = "r:gz"
    elif media_type in TAR_LAYER_TYPES:
        mode = "r:"
    else:
        raise ValueError(f"unsupported layer media type {media_type} (expected a tar or tar+gzip layer)")
    found = []
    with tarfile.open(layer_path, mode=mode) as tar:
        for member in tar:
            name = _adapter_file_name(member.name)
            if name is None or not member.isfile():
                continue
            source = tar.extractfile(member)
            target = dest / name
            with source, target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            found.append(name)
    return found
