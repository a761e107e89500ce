"""Credentials from docker config.json (the `.dockerconfigjson` format), the environment and arguments; image
references. No registry needed."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from runtime.adapters.credentials import Credentials, CredentialsError, from_docker_config, resolve
from runtime.adapters.registry import Reference, is_loopback

HOST = "myacr.azurecr.io"


def _write(path, config):
    path.write_text(json.dumps(config))
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("KAITO_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("KAITO_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def test_dockerconfigjson_auth_field(tmp_path):
    # The shape of a Kubernetes kubernetes.io/dockerconfigjson secret (kubectl create secret docker-registry).
    path = _write(tmp_path / "config.json", {"auths": {HOST: {"username": "ignored", "auth": _b64("sp:s3cr:et")}}})
    creds = from_docker_config(HOST, path)
    assert (creds.username, creds.password, creds.source) == ("sp", "s3cr:et", str(path))


def test_username_password_fields_url_keys_and_identity_token(tmp_path):
    path = _write(tmp_path / "config.json", {"auths": {
        f"https://{HOST}": {"username": "u", "password": "p"},
        "https://index.docker.io/v1/": {"auth": _b64("hub:pw")},
        "other.azurecr.io": {"identitytoken": "refresh-token"},
    }})  # fmt: skip
    assert from_docker_config(HOST, path) == Credentials("u", "p", source=str(path))
    assert from_docker_config("docker.io", path).username == "hub"
    token = from_docker_config("other.azurecr.io", path)
    assert token.identity_token == "refresh-token" and not token.password
    assert from_docker_config("unknown.example.com", path) is None


def test_legacy_dockercfg_without_auths(tmp_path):
    path = _write(tmp_path / ".dockercfg", {HOST: {"auth": _b64("old:style")}})
    assert from_docker_config(HOST, path).password == "style"


def test_bad_config_errors_name_file_and_field(tmp_path):
    bad_b64 = _write(tmp_path / "a.json", {"auths": {HOST: {"auth": "not base64!"}}})
    with pytest.raises(CredentialsError, match=rf"a.json: auths.{HOST}.auth is not base64"):
        from_docker_config(HOST, bad_b64)
    no_colon = _write(tmp_path / "b.json", {"auths": {HOST: {"auth": _b64("nocolon")}}})
    with pytest.raises(CredentialsError, match="does not decode to 'user:password'"):
        from_docker_config(HOST, no_colon)
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(CredentialsError, match="c.json is not valid JSON"):
        from_docker_config(HOST, tmp_path / "c.json")
    with pytest.raises(CredentialsError, match="does not exist"):
        from_docker_config(HOST, tmp_path / "missing.json")


def test_credential_helper_is_run_like_docker_does(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-kaitotest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread host\necho "{\\"Username\\": \\"helper-user\\", \\"Secret\\": \\"from-$host\\"}"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    path = _write(tmp_path / "config.json", {"auths": {}, "credHelpers": {HOST: "kaitotest"}})
    creds = from_docker_config(HOST, path)
    assert (creds.username, creds.password) == ("helper-user", f"from-{HOST}")


def test_resolution_order(tmp_path, monkeypatch):
    default = tmp_path / "docker"
    default.mkdir()
    _write(default / "config.json", {"auths": {HOST: {"auth": _b64("default:pw")}}})
    explicit = _write(tmp_path / "explicit.json", {"auths": {HOST: {"auth": _b64("explicit:pw")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(default))
    assert resolve(HOST).username == "default"
    monkeypatch.setenv("KAITO_REGISTRY_USERNAME", "env")
    monkeypatch.setenv("KAITO_REGISTRY_PASSWORD", "env-pw")
    assert resolve(HOST).username == "env"
    assert resolve(HOST, docker_config=explicit).username == "explicit"
    assert resolve(HOST, auth=("arg", "arg-pw"), docker_config=explicit).username == "arg"


def test_secrets_never_in_repr():
    creds = Credentials("user", "hunter2-password", identity_token="tok-123", source="x")
    assert "hunter2" not in repr(creds) and "tok-123" not in repr(creds) and "user" in repr(creds)


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("127.0.0.1:5000/adapters/france:v1", ("127.0.0.1:5000", "adapters/france", "v1", None)),
        ("oci://127.0.0.1:5000/adapters/france:v1", ("127.0.0.1:5000", "adapters/france", "v1", None)),
        ("myacr.azurecr.io/france", ("myacr.azurecr.io", "france", "latest", None)),
        ("localhost/a/b:1", ("localhost", "a/b", "1", None)),
        ("busybox", ("docker.io", "library/busybox", "latest", None)),
        (f"r.io/x@sha256:{'a' * 64}", ("r.io", "x", "latest", "sha256:" + "a" * 64)),
    ],
)
def test_reference_parsing(ref, expected):
    r = Reference.parse(ref)
    assert (r.host, r.repository, r.tag, r.digest) == expected


@pytest.mark.parametrize("ref", ["", "https://r.io/x:1", "r.io/Upper:1", "r.io/x@sha256:short"])
def test_bad_references_are_refused_with_the_reference_named(ref):
    with pytest.raises(ValueError, match="image reference"):
        Reference.parse(ref)


def test_loopback_detection():
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:5000") and is_loopback("[::1]:5000")
    assert not is_loopback("myacr.azurecr.io") and not is_loopback("10.0.0.1:5000")
