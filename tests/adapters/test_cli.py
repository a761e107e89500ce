"""`kaito adapter push|pull|pack` as the sidecar pusher and the init-container puller run them (subprocesses, real
registry on loopback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from runtime.adapters.cli import SENTINEL
from runtime.adapters.image import adapter_annotations, pack_adapter
from tests.adapters.conftest import make_adapter, run_kaito

pytestmark = pytest.mark.registry

KAITO = [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())"]


def _tags(registry, repository: str) -> list[str]:
    response = httpx.get(f"{registry.url}/v2/{repository}/tags/list")
    return response.json().get("tags") or [] if response.status_code == 200 else []


def test_sidecar_waits_for_the_sentinel_then_pushes(registry, tmp_path):
    output_dir = make_adapter(tmp_path / "results")  # the trainer's output dir, adapter written, not yet finished
    ref = registry.ref("adapters/sidecar", "v1")
    proc = subprocess.Popen(
        [*KAITO, "adapter", "push", "--wait-for", str(output_dir), ref, "--poll-interval", "0.1", "--preset", "tiny-llama"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.stderr.read()  # still waiting: no sentinel yet
        assert _tags(registry, "adapters/sidecar") == []
        (output_dir / SENTINEL).write_text("completed\n")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    digest = pack_adapter(output_dir, adapter_annotations("tiny-llama")).manifest_digest
    assert out.strip() == f"{ref}@{digest}"
    assert _tags(registry, "adapters/sidecar") == ["v1"]


def test_failed_push_keeps_the_adapter_and_a_rerun_pushes(htpasswd_registry, tmp_path):
    reg = htpasswd_registry
    output_dir = make_adapter(tmp_path / "results")
    (output_dir / SENTINEL).write_text("completed\n")
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    ref = reg.ref("adapters/rerun", "v1")
    env = {"DOCKER_CONFIG": str(tmp_path / "no-config")}
    failed = run_kaito("adapter", "push", "--wait-for", str(output_dir), ref, env_extra=env)
    assert failed.returncode == 1
    assert "requires credentials" in failed.stderr and "the adapter files are kept" in failed.stderr
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before
    config = reg.write_docker_config(tmp_path / "secret" / "config.json")
    rerun = run_kaito("adapter", "push", "--wait-for", str(output_dir), ref, "--docker-config", str(config), env_extra=env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip().startswith(f"{ref}@sha256:")


def test_init_container_pull(registry, adapter_dir, tmp_path):
    ref = registry.ref("adapters/initpull", "v1")
    assert run_kaito("adapter", "push", str(adapter_dir), ref).returncode == 0
    target = tmp_path / "mnt" / "adapter" / "france"
    result = run_kaito("adapter", "pull", f"oci://{ref}", "--to", str(target))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((target / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_pack_offline_then_copy_with_skopeo(registry, adapter_dir, tmp_path):
    archive = tmp_path / "france.tar"
    packed = run_kaito("adapter", "pack", str(adapter_dir), str(archive), "--tag", "v1", "--preset", "tiny-llama")
    assert packed.returncode == 0, packed.stderr
    digest = packed.stdout.strip()
    assert digest == pack_adapter(adapter_dir, adapter_annotations("tiny-llama")).manifest_digest
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    ref = registry.ref("adapters/packed", "v1")
    subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{archive}:v1", f"docker://{ref}"],
        check=True, capture_output=True,
    )  # fmt: skip
    # The same bytes: pushing the directory ourselves lands on the digest skopeo copied.
    pushed = run_kaito("adapter", "push", str(adapter_dir), ref, "--preset", "tiny-llama")
    assert pushed.stdout.strip() == f"{ref}@{digest}"


@pytest.mark.parametrize(
    "args, message",
    [
        (["adapter", "push", "127.0.0.1:1/a:b"], "usage: kaito adapter push DIR REF"),
        (["adapter", "push", "--wait-for", "d", "x", "127.0.0.1:1/a:b"], "give only REF"),
        (["adapter", "push", ".", "127.0.0.1:1/UPPER:b"], "must be lower-case"),
        (["adapter", "push", ".", "127.0.0.1:1/a:b", "--annotation", "novalue"], "--annotation 'novalue'"),
        (["adapter", "push", ".", "127.0.0.1:1/a:b", "--password-stdin"], "--password-stdin needs --username"),
        (["adapter", "pack", "/nonexistent-adapter"], "does not exist"),
    ],
)
def test_usage_errors_name_the_argument(args, message):
    result = run_kaito(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
