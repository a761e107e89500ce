"""Where plain http is allowed, and what a Bearer token request asks for (no registry needed)."""

from __future__ import annotations

import pytest

from runtime.adapters.credentials import Credentials
from runtime.adapters.registry import AuthenticationError, RegistryAuth, RegistryClient, _parse_challenge

CREDS = Credentials("sp", "secret-pw", source="test")


@pytest.mark.parametrize(
    "host, insecure, scheme",
    [
        ("myacr.azurecr.io", False, "https"),
        ("myacr.azurecr.io", True, "http"),
        ("127.0.0.1:5000", False, "http"),
        ("localhost:5000", False, "http"),
        ("10.0.0.7:5000", False, "https"),
    ],
)
def test_plain_http_only_for_loopback_or_insecure(host, insecure, scheme):
    with RegistryClient(host, insecure=insecure) as client:
        assert client.base_url == f"{scheme}://{host}"


def test_insecure_registries_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAITO_INSECURE_REGISTRIES", "registry.kaito.svc:5000, other:80")
    with RegistryClient("registry.kaito.svc:5000") as client:
        assert client.base_url == "http://registry.kaito.svc:5000"
    with RegistryClient("registry.kaito.svc") as client:  # another host (no port): still https
        assert client.base_url == "https://registry.kaito.svc"


def test_credentials_are_not_sent_to_a_plain_http_token_realm_elsewhere():
    auth = RegistryAuth("myacr.azurecr.io", CREDS, ("pull",), insecure=False)
    challenge = {"realm": "http://auth.example.com/token", "service": "myacr.azurecr.io"}
    with pytest.raises(AuthenticationError, match="refusing to send credentials to auth.example.com over plain http"):
        auth._token_request(challenge, "adapters/x")
    # https realm: a GET with Basic credentials and a scope that covers what this client will do.
    auth = RegistryAuth("myacr.azurecr.io", CREDS, ("pull", "push"), insecure=False)
    challenge = {"realm": "https://myacr.azurecr.io/oauth2/token", "service": "myacr.azurecr.io",
                 "scope": "repository:adapters/x:pull"}  # fmt: skip
    request = auth._token_request(challenge, "adapters/x")
    assert request.method == "GET" and request.headers["Authorization"].startswith("Basic ")
    assert request.url.params.get_list("scope") == ["repository:adapters/x:pull,push"]
    assert request.url.params["service"] == "myacr.azurecr.io"


def test_identity_token_is_exchanged_by_post():
    auth = RegistryAuth("myacr.azurecr.io", Credentials(identity_token="rt", source="t"), ("pull",), insecure=False)
    request = auth._token_request({"realm": "https://myacr.azurecr.io/oauth2/token", "service": "s"}, "a/b")
    body = request.read().decode()
    assert request.method == "POST" and "grant_type=refresh_token" in body and "refresh_token=rt" in body
    assert "Authorization" not in request.headers


def test_challenge_parsing():
    scheme, params = _parse_challenge(
        'Bearer realm="https://r.io/oauth2/token",service="r.io",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://r.io/oauth2/token", "service": "r.io", "scope": "repository:a/b:pull,push"}
    assert _parse_challenge('Basic realm="kaito"') == ("basic", {"realm": "kaito"})
