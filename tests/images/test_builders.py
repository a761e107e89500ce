"""Builder detection and the exact command lines (no builder is run here; the `image` tier runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.images.builders import Builder, BuilderError, BuilderOptions, default_runroot, detect_builder


def _which(available):
    return lambda name: f"/usr/bin/{name}" if name in available else None


def test_docker_preferred_when_its_engine_runs():
    builder = detect_builder(options=BuilderOptions(), which=_which({"docker", "buildah"}), engine_up=lambda _: True)
    assert builder.name == "docker"


def test_docker_cli_without_engine_falls_back_to_buildah():
    builder = detect_builder(options=BuilderOptions(), which=_which({"docker", "buildah", "podman"}),
                             engine_up=lambda _: False)
    assert (builder.name, builder.executable) == ("buildah", "/usr/bin/buildah")


def test_podman_when_alone():
    assert detect_builder(options=BuilderOptions(), which=_which({"podman"})).name == "podman"


def test_environment_choice(monkeypatch):
    monkeypatch.setenv("KAITO_IMAGE_BUILDER", "podman")
    assert detect_builder(options=BuilderOptions(), which=_which({"buildah", "podman"})).name == "podman"


def test_no_builder_says_what_was_tried(monkeypatch):
    monkeypatch.delenv("KAITO_IMAGE_BUILDER", raising=False)
    with pytest.raises(BuilderError, match=r"docker: CLI found but no engine.*buildah: not installed"):
        detect_builder(options=BuilderOptions(), which=_which({"docker"}), engine_up=lambda _: False)
    with pytest.raises(BuilderError, match="--builder"):
        detect_builder("kaniko", BuilderOptions(), which=_which({"docker"}))


def test_options_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("KAITO_BUILDER_ROOT", str(tmp_path))
    monkeypatch.setenv("KAITO_STORAGE_DRIVER", "vfs")
    monkeypatch.setenv("KAITO_BUILD_ISOLATION", "chroot")
    options = BuilderOptions.from_env(storage_driver="overlay")  # an explicit value beats the environment
    runroot = default_runroot(tmp_path)
    assert options.storage_flags() == ["--root", str(tmp_path), "--runroot", str(runroot), "--storage-driver", "overlay"]
    assert len(str(runroot)) <= 50  # podman's limit
    assert options.isolation == "chroot"


def test_buildah_command_line(tmp_path):
    builder = Builder("buildah", "/usr/bin/buildah",
                      BuilderOptions(root=tmp_path, storage_driver="vfs", isolation="chroot"))
    token = tmp_path / "token"
    token.write_text("hf_SECRET_VALUE")
    cmd = builder.build_command(Path("/ctx"), "r/kaito-x:1", build_args={"A": "1", "B": "two words"},
                                secrets={"hf_token": token}, target="app")
    assert cmd[:7] == ["/usr/bin/buildah", "--root", str(tmp_path), "--runroot", str(default_runroot(tmp_path)),
                       "--storage-driver", "vfs"]
    assert cmd[7:10] == ["bud", "--isolation", "chroot"]
    assert cmd[cmd.index("-f") + 1] == "/ctx/Dockerfile"
    assert "B=two words" in cmd and f"id=hf_token,src={token}" in cmd
    assert cmd[-3:] == ["--target", "app", "/ctx"]
    assert not any("hf_SECRET_VALUE" in part for part in cmd)  # only the secret's path is on the command line
    push = builder.push_command("r/kaito-x:1", tls_verify=False)
    assert push[7:] == ["push", "--tls-verify=false", "r/kaito-x:1"]


def test_docker_command_line_ignores_podman_options(tmp_path):
    builder = Builder("docker", "/usr/bin/docker", BuilderOptions(root=tmp_path, isolation="chroot"))
    cmd = builder.build_command(Path("/ctx"), "img:1", dockerfile=Path("/ctx/Dockerfile.hf"))
    assert cmd == ["/usr/bin/docker", "build", "-t", "img:1", "-f", "/ctx/Dockerfile.hf", "/ctx"]
    assert builder.push_command("img:1") == ["/usr/bin/docker", "push", "img:1"]


def test_failed_command_raises_with_output(tmp_path):
    builder = Builder("buildah", "/bin/sh")
    with pytest.raises(BuilderError, match=r"(?s)exit 3.*boom"):
        builder.run(["/bin/sh", "-c", "echo boom >&2; exit 3"])
