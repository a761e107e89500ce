"""Packing an adapter into Kaito's image layout, reproducibly (no registry needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest

from runtime.adapters.image import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    adapter_annotations,
    extract_adapter_files,
    pack_adapter,
)
from tests.adapters.conftest import make_adapter


def test_same_files_give_the_same_digest_wherever_and_whenever_they_lie(adapter_dir, tmp_path):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(adapter_dir, copy)
    os.utime(copy / "adapter_model.safetensors", (1_000_000, 1_000_000))  # other mtimes must not matter
    first, second = pack_adapter(adapter_dir), pack_adapter(copy)
    assert first.manifest_digest == second.manifest_digest
    assert first.layer == second.layer and first.config == second.config


def test_other_content_or_annotations_give_another_digest(adapter_dir, tmp_path):
    base = pack_adapter(adapter_dir)
    other = pack_adapter(make_adapter(tmp_path / "other", seed=1))
    assert other.layer_digest != base.layer_digest
    annotated = pack_adapter(adapter_dir, adapter_annotations("tiny-llama", "local", "qlora"))
    assert annotated.layer_digest == base.layer_digest  # same files, same layer
    assert annotated.manifest_digest != base.manifest_digest


def test_layer_holds_kaitos_data_layout_with_neutral_metadata(adapter_dir):
    layer, config, manifest = pack_adapter(adapter_dir)  # the (layer, config, manifest) contract
    tar_bytes = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["data", "data/adapter_config.json", "data/adapter_model.safetensors"]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert tar.extractfile("data/adapter_model.safetensors").read() == (
            adapter_dir / "adapter_model.safetensors"
        ).read_bytes()
    assert layer[4:8] == b"\0\0\0\0"  # gzip header mtime 0


def test_config_and_manifest_follow_the_oci_image_spec(adapter_dir):
    packed = pack_adapter(adapter_dir, adapter_annotations("tiny-llama", "local", "lora"))
    config = json.loads(packed.config)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(packed.layer)).hexdigest()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}
    assert config["config"]["Labels"]["sh.kaito.model.name"] == "tiny-llama"
    manifest = json.loads(packed.manifest)
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": OCI_CONFIG, "digest": packed.config_digest, "size": len(packed.config)}
    assert manifest["layers"] == [{"mediaType": OCI_LAYER_GZIP, "digest": packed.layer_digest, "size": len(packed.layer)}]
    assert manifest["annotations"] == {
        "sh.kaito.model.name": "tiny-llama",
        "sh.kaito.model.revision": "local",
        "sh.kaito.tuning.method": "lora",
        "org.opencontainers.image.title": "tiny-llama lora adapter",
    }


def test_missing_adapter_file_is_named(adapter_dir):
    (adapter_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks adapter_model.safetensors"):
        pack_adapter(adapter_dir)


def test_extract_takes_only_the_two_adapter_files_and_cannot_escape(tmp_path):
    layer = tmp_path / "hostile.tar"
    with tarfile.open(layer, "w") as tar:
        for name, data in [
            ("../escape.txt", b"x"),
            ("data/../../escape2.txt", b"x"),
            ("/data/adapter_config.json", b'{"r": 4}'),
            ("./data/adapter_model.safetensors", b"weights"),
            ("data/notes.txt", b"ignored"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("data/adapter_model.safetensors")  # a later symlink must not replace the file
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    dest = tmp_path / "dest"
    dest.mkdir()
    found = extract_adapter_files(layer, "application/vnd.oci.image.layer.v1.tar", dest)
    assert sorted(found) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (dest / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
    with pytest.raises(ValueError, match="unsupported layer media type"):
        extract_adapter_files(layer, "application/vnd.oci.image.layer.v1.tar+zstd", dest)
