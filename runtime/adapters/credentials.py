"""Registry credentials: from arguments, the environment, or a docker `config.json`.

The docker config format is also a Kubernetes `kubernetes.io/dockerconfigjson` secret's `.dockerconfigjson`
(Kaito projects an `imagePushSecret` as `/root/.docker/config.json`): `{"auths": {"<host>": {"auth":
base64("user:password")}}}`, or `username`/`password` fields, or an `identitytoken` (an OAuth2 refresh token, as
`az acr login` writes). The legacy `.dockercfg` form (hosts at the top level) is read too. `credHelpers` and
`credsStore` run `docker-credential-<name> get`, as docker does.

Secrets never reach a log or an error message: `Credentials.__repr__` hides them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

ENV_USERNAME = "KAITO_REGISTRY_USERNAME"
ENV_PASSWORD = "KAITO_REGISTRY_PASSWORD"
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(ValueError):
    """A docker config or credential source that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) for one registry. The repr never shows the secret."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    """An OAuth2 refresh token (docker config `identitytoken`), exchanged at the registry's token endpoint."""
    source: str = ""
    """Where these came from (a file path, `environment`, `arguments`), for error messages."""

    def __bool__(self) -> bool:
        return bool(self.password or self.identity_token)

    def basic_header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def default_docker_config() -> Path:
    """$DOCKER_CONFIG/config.json, else ~/.docker/config.json (docker's own rule)."""
    root = os.environ.get("DOCKER_CONFIG")
    return Path(root) / "config.json" if root else Path.home() / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    """The keys a docker config may use for `host` (docker writes bare hosts; older tools wrote URLs)."""
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return list(DOCKER_HUB_KEYS)
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _from_helper(helper: str, host: str, source: str) -> Credentials | None:
    binary = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([binary, "get"], input=host.encode(), capture_output=True, timeout=30)
    except FileNotFoundError as err:
        raise CredentialsError(f"{source}: credential helper {binary} is not on PATH") from err
    if proc.returncode != 0:
        log.debug("credential helper %s has nothing for %s", binary, host)
        return None
    data = json.loads(proc.stdout)
    username, secret = data.get("Username", ""), data.get("Secret", "")
    if username == "<token>":  # docker's convention for identity tokens
        return Credentials(identity_token=secret, source=f"{binary}")
    return Credentials(username=username, password=secret, source=f"{binary}")


def _from_entry(entry: dict, key: str, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise CredentialsError(f"{source}: auths.{key} must be an object")
    username, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as err:
            raise CredentialsError(f"{source}: auths.{key}.auth is not base64 of 'user:password'") from err
        username, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"{source}: auths.{key}.auth does not decode to 'user:password'")
    token = entry.get("identitytoken", "")
    if not (password or token):
        return None
    return Credentials(username=username, password=password, identity_token=token, source=source)


def from_docker_config(host: str, path: Path | None = None) -> Credentials | None:
    """Credentials for `host` from a docker config file (default: `default_docker_config()`), or None."""
    explicit = path is not None
    path = Path(path) if explicit else default_docker_config()
    if not path.is_file():
        if explicit:
            raise CredentialsError(f"docker config {path} does not exist")
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CredentialsError(f"docker config {path} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise CredentialsError(f"docker config {path} must be a JSON object with an 'auths' field")
    auths = config.get("auths")
    if auths is None:
        # Legacy .dockercfg: hosts at the top level.
        auths = {k: v for k, v in config.items() if k not in ("credHelpers", "credsStore") and isinstance(v, dict)}
    if not isinstance(auths, dict):
        raise CredentialsError(f"docker config {path}: 'auths' must be an object")
    source = str(path)
    for key in _host_keys(host):
        if key in auths:
            creds = _from_entry(auths[key], key, source)
            if creds:
                return creds
    helper = (config.get("credHelpers") or {}).get(host) or config.get("credsStore")
    if helper:
        return _from_helper(helper, host, source)
    return None


def resolve(
    host: str,
    auth: Credentials | tuple[str, str] | None = None,
    docker_config: Path | None = None,
) -> Credentials | None:
    """The credentials to use for `host`, first found: explicit `auth`; the `docker_config` file given; the
    environment ($KAITO_REGISTRY_USERNAME / $KAITO_REGISTRY_PASSWORD); the default docker config. None means
    anonymous."""
    if isinstance(auth, Credentials):
        return auth
    if auth is not None:
        username, password = auth
        return Credentials(username=username, password=password, source="arguments")
    if docker_config is not None:
        return from_docker_config(host, docker_config)
    if os.environ.get(ENV_PASSWORD):
        return Credentials(
            username=os.environ.get(ENV_USERNAME, ""), password=os.environ[ENV_PASSWORD], source="environment"
        )
    return from_docker_config(host)
