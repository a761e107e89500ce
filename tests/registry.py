"""A real OCI registry on loopback for tests: Debian's `docker-registry` (distribution 2.8), started and stopped by PID.

Three modes:
- `auth=None`: open registry.
- `auth="htpasswd"`: Basic auth from an `htpasswd -Bbn` file (the registry answers 401 with a Basic challenge).
- `auth="token"`: the registry's own `auth: token` mode, the Bearer flow ACR and Docker Hub use: 401 with
  `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, then a token endpoint. The token endpoint is
  `TokenServer` below (a small HTTP server in this process), which checks Basic credentials and issues
  RS256 JWTs signed with a throw-away self-signed certificate (made with the `openssl` CLI); the registry
  verifies them against that certificate (`rootcertbundle`). Anonymous callers get pull-only tokens.

Usage:

    from tests.registry import run_registry, registry_fixture

    with run_registry(tmp_path, auth="htpasswd") as reg:
        reg.url, reg.host, reg.username, reg.password, reg.ref("adapters/x", "v1")

    registry = registry_fixture()                       # module-scoped fixture named `registry`
    secured_registry = registry_fixture(auth="htpasswd")
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlparse

import pytest

from tests.support import free_port, wait_http

AuthMode = Literal["htpasswd", "token"] | None

REGISTRY_BINARY = "docker-registry"
TOKEN_SERVICE = "kaito-test-registry"
TOKEN_ISSUER = "kaito-test-token-issuer"


@dataclass
class Registry:
    """A running registry. `host` is `127.0.0.1:PORT` (what goes in image references)."""

    host: str
    url: str
    root: Path
    auth: AuthMode = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token_server: TokenServer | None = None

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.host}/{repository}:{tag}"

    @property
    def creds(self) -> str | None:
        """`user:password` for skopeo's --creds, or None for an open registry."""
        return f"{self.username}:{self.password}" if self.username else None

    def write_docker_config(self, path: Path, *, password: str | None = None) -> Path:
        """Write a docker config.json (the `.dockerconfigjson` format) holding this registry's credentials."""
        secret = f"{self.username}:{password if password is not None else self.password}"
        config = {"auths": {self.host: {"auth": base64.b64encode(secret.encode()).decode()}}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        return path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker-token-spec endpoint (GET realm?service=&scope=) for the registry's `auth: token` mode.

    Signs with `openssl dgst -sha256 -sign` (RS256 = PKCS#1 v1.5 over SHA-256) and puts the certificate in the
    JWT's `x5c` header, which distribution 2.8 verifies against its `rootcertbundle`.
    """

    def __init__(self, workdir: Path, username: str, password: str):
        self.username, self.password = username, password
        self.key = workdir / "token-key.pem"
        self.cert = workdir / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", self.cert,
             "-days", "2", "-subj", "/CN=kaito-test-token-issuer"],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True, capture_output=True
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self.refresh_token = "refresh-" + secrets.token_urlsafe(12)
        """Accepted by the POST (OAuth2 refresh-token) grant, as an `identitytoken` in a docker config."""
        self.fail_next = 0
        """Answer this many of the next token requests with HTTP 503 (to test retries)."""
        self.requests: list[dict] = []
        """One entry per token request: {"user", "scope", "granted"} (for tests to inspect)."""
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, subject: str, access: list[dict]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 30,
            "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(), check=True,
            capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def _grant(self, user: str | None, scopes: list[str]) -> list[dict]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = wanted if user else [a for a in wanted if a == "pull"]
            if kind == "repository" and allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (http.server's naming)
                query = parse_qs(urlparse(self.path).query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    given = base64.b64decode(header[6:]).decode(errors="replace")
                    if given != f"{server.username}:{server.password}":
                        return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    user = server.username
                self._grant_and_send(user, query)

            def do_POST(self):  # noqa: N802
                # The OAuth2 refresh-token grant (ACR's POST /oauth2/token with an `identitytoken`).
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [server.refresh_token]:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad refresh token"}]})
                self._grant_and_send(server.username, form)

            def _grant_and_send(self, user, query):
                if server.fail_next > 0:
                    server.fail_next -= 1
                    return self._send(503, {"errors": [{"code": "UNAVAILABLE", "message": "try again"}]})
                access = server._grant(user, query.get("scope", []))
                server.requests.append({"user": user, "scope": query.get("scope", []), "granted": access})
                token = server.issue(user or "anonymous", access)
                self._send(200, {"token": token, "access_token": token, "expires_in": 300})

            def _send(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _config(root: Path, port: int, auth: dict | None) -> dict:
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth:
        config["auth"] = auth
    return config


@contextlib.contextmanager
def run_registry(
    tmp_dir: Path, auth: AuthMode = None, username: str = "kaito", password: str | None = None
) -> Iterator[Registry]:
    """Start `docker-registry serve` on a free loopback port; stop it (by PID) on exit.

    The registry's storage and config live under `tmp_dir`. Skips the calling test when the binary is missing.
    """
    if shutil.which(REGISTRY_BINARY) is None:
        pytest.skip(f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)")
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    password = password or secrets.token_urlsafe(12)
    port = free_port()
    token_server = None
    auth_config = None
    if auth == "htpasswd":
        htpasswd = subprocess.run(["htpasswd", "-Bbn", username, password], check=True, capture_output=True).stdout
        (tmp_dir / "htpasswd").write_bytes(htpasswd)
        auth_config = {"htpasswd": {"realm": "kaito-test", "path": str(tmp_dir / "htpasswd")}}
    elif auth == "token":
        token_server = TokenServer(tmp_dir, username, password)
        auth_config = {
            "token": {"realm": token_server.realm, "service": TOKEN_SERVICE, "issuer": TOKEN_ISSUER,
                      "rootcertbundle": str(token_server.cert)}
        }  # fmt: skip
    elif auth is not None:
        raise ValueError(f"auth must be None, 'htpasswd' or 'token', not {auth!r}")
    config_path = tmp_dir / "registry.yml"
    config_path.write_text(json.dumps(_config(tmp_dir, port, auth_config)))  # JSON is YAML
    log = open(tmp_dir / "registry.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if token_server:
            token_server.start()
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v2/", timeout=30, ok=(200, 401), proc=proc)
        yield Registry(
            host=f"127.0.0.1:{port}", url=url, root=tmp_dir, auth=auth,
            username=username if auth else None, password=password if auth else None, token_server=token_server,
        )  # fmt: skip
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if token_server:
            token_server.stop()
        # The pushed images (a runtime image is over a GB) go with the registry: disk is shared and finite here.
        # Its config and log stay beside it for a failing test's report.
        shutil.rmtree(tmp_dir / "data", ignore_errors=True)


def registry_fixture(auth: AuthMode = None, scope: str = "module"):
    """A pytest fixture that yields a `Registry`; assign it to a module-level name to use it:

        registry = registry_fixture()
        token_registry = registry_fixture(auth="token")
    """

    @pytest.fixture(scope=scope)
    def _registry(tmp_path_factory) -> Iterator[Registry]:
        with run_registry(tmp_path_factory.mktemp(f"registry-{auth or 'open'}"), auth=auth) as reg:
            yield reg

    return _registry
