"""Basic auth (htpasswd) and Bearer-token auth against a real registry on loopback.

The Bearer tests use distribution's own `auth: token` mode: the registry answers 401 with
`WWW-Authenticate: Bearer realm,service,scope` and verifies the JWTs it is handed against a certificate. The token
endpoint is tests/registry.py's TokenServer (a small in-process server that checks Basic credentials and signs
tokens with that certificate), standing in for ACR's /oauth2/token; the registry, the challenge and the token check
are real.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from runtime.adapters.credentials import Credentials
from runtime.adapters.oci import AuthenticationError, pull, push_adapter
from tests.adapters.conftest import run_kaito as _kaito

pytestmark = pytest.mark.registry


def _same(a, b):
    return (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()


# -- Basic (htpasswd) -------------------------------------------------------------------------------------------


def test_basic_auth_push_and_pull(htpasswd_registry, adapter_dir, tmp_path):
    reg = htpasswd_registry
    ref = reg.ref("adapters/basic", "v1")
    push_adapter(adapter_dir, ref, auth=(reg.username, reg.password))
    assert _same(adapter_dir, pull(ref, tmp_path / "out", auth=(reg.username, reg.password)))


def test_basic_auth_from_a_dockerconfigjson(htpasswd_registry, adapter_dir, tmp_path):
    reg = htpasswd_registry
    config = reg.write_docker_config(tmp_path / "secret" / "config.json")
    ref = reg.ref("adapters/from-config", "v1")
    push_adapter(adapter_dir, ref, docker_config=config)
    assert _same(adapter_dir, pull(ref, tmp_path / "out", docker_config=config))


def test_bad_password_is_a_clear_error_without_the_password(htpasswd_registry, adapter_dir):
    reg = htpasswd_registry
    wrong = "wrong-Pa55word-xyz"
    with pytest.raises(AuthenticationError) as err:
        push_adapter(adapter_dir, reg.ref("adapters/denied", "v1"), auth=Credentials(reg.username, wrong, source="test"))
    message = str(err.value)
    assert f"registry {reg.host} rejected the credentials of user '{reg.username}'" in message
    assert wrong not in message and reg.password not in message


def test_missing_credentials_say_how_to_give_them(htpasswd_registry, adapter_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.delenv("KAITO_REGISTRY_PASSWORD", raising=False)
    with pytest.raises(AuthenticationError, match="requires credentials.*--password-stdin"):
        push_adapter(adapter_dir, htpasswd_registry.ref("adapters/anon", "v1"))


def test_cli_bad_credentials_exit_non_zero_and_never_print_the_password(htpasswd_registry, adapter_dir, tmp_path):
    reg = htpasswd_registry
    wrong = "Sup3r-secret-wrong"
    result = _kaito(
        "-v", "adapter", "push", str(adapter_dir), reg.ref("adapters/cli-denied", "v1"), "--username", reg.username,
        "--password-stdin", stdin=wrong + "\n",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: push of {adapter_dir}")
    basic = base64.b64encode(f"{reg.username}:{wrong}".encode()).decode()
    assert basic not in result.stderr and "Authorization" not in result.stderr  # -v logs no request headers
    assert "rejected the credentials" in result.stderr and "kept" in result.stderr
    assert wrong not in result.stderr + result.stdout
    # The same through a docker config file (the password is in base64 there: check that form too).
    config = reg.write_docker_config(tmp_path / "bad" / "config.json", password=wrong)
    result = _kaito("-v", "adapter", "pull", reg.ref("adapters/cli-denied", "v1"), "--to", str(tmp_path / "o"),
                    "--docker-config", str(config))  # fmt: skip
    assert result.returncode == 1 and "rejected the credentials" in result.stderr
    encoded = json.loads(config.read_text())["auths"][reg.host]["auth"]
    assert wrong not in result.stderr + result.stdout and encoded not in result.stderr + result.stdout


# -- Bearer (token) ---------------------------------------------------------------------------------------------


def test_bearer_flow_push_with_credentials_and_anonymous_pull(token_registry, adapter_dir, tmp_path, monkeypatch):
    reg = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.delenv("KAITO_REGISTRY_PASSWORD", raising=False)
    ref = reg.ref("adapters/bearer", "v1")
    reg.token_server.requests.clear()
    push_adapter(adapter_dir, ref, auth=(reg.username, reg.password))
    pushes = [r for r in reg.token_server.requests if r["user"] == reg.username]
    assert pushes and pushes[0]["scope"] == ["repository:adapters/bearer:pull,push"]
    # Anonymous callers get pull-only tokens from this token server: pull works, push does not.
    assert _same(adapter_dir, pull(ref, tmp_path / "out"))
    assert any(r["user"] is None and r["granted"] for r in reg.token_server.requests)
    with pytest.raises(AuthenticationError, match="requires credentials"):
        push_adapter(adapter_dir, reg.ref("adapters/bearer-anon", "v1"))


def test_bearer_bad_credentials_are_refused_at_the_token_endpoint(token_registry, adapter_dir):
    reg = token_registry
    wrong = "not-the-token-password"
    with pytest.raises(AuthenticationError) as err:
        push_adapter(adapter_dir, reg.ref("adapters/bearer-denied", "v1"), auth=(reg.username, wrong))
    message = str(err.value)
    assert "token endpoint" in message and f"user '{reg.username}'" in message and "401" in message
    assert wrong not in message


def test_skopeo_reads_our_image_through_the_same_bearer_flow(token_registry, adapter_dir):
    import shutil

    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    reg = token_registry
    ref = reg.ref("adapters/bearer-skopeo", "v1")
    digest = push_adapter(adapter_dir, ref, auth=(reg.username, reg.password))
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", reg.creds, f"docker://{ref}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(inspect.stdout)["Digest"] == digest


def test_bearer_with_an_identity_token_from_docker_config(token_registry, adapter_dir, tmp_path):
    """`az acr login` leaves an OAuth2 refresh token (`identitytoken`) in config.json: it is exchanged by POST."""
    reg = token_registry
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {reg.host: {"identitytoken": reg.token_server.refresh_token}}}))
    ref = reg.ref("adapters/identity-token", "v1")
    push_adapter(adapter_dir, ref, docker_config=config)
    assert _same(adapter_dir, pull(ref, tmp_path / "out", docker_config=config))
    config.write_text(json.dumps({"auths": {reg.host: {"identitytoken": "expired-token"}}}))
    with pytest.raises(AuthenticationError, match="token endpoint .* refused"):
        push_adapter(adapter_dir, reg.ref("adapters/identity-token", "v2"), docker_config=config)


def test_token_endpoint_outage_is_retried(token_registry, adapter_dir, tmp_path):
    reg = token_registry
    reg.token_server.fail_next = 1
    ref = reg.ref("adapters/token-retry", "v1")
    push_adapter(adapter_dir, ref, auth=(reg.username, reg.password))
    assert reg.token_server.fail_next == 0
    assert _same(adapter_dir, pull(ref, tmp_path / "out", auth=(reg.username, reg.password)))
