"""A small client for the OCI distribution API (push and pull of blobs and manifests), on httpx.

Why not oras-py's `Registry` (installed; see docs/adapters.md): its high-level push makes an artifact rather than
an image, and its low-level calls retry only HTTP 500 (not 502/503/504 or 429) with 3^n-second sleeps, retry a
failed chunk inside a broken upload session, pick Basic or Bearer up front instead of from the registry's
challenge, reuse one Bearer token for every scope, and do not check digests on download. What we keep from it is
its image-reference parser (`oras.container.Container`). httpx gives the rest: its `Auth` flow protocol carries
the challenge/response dance (Basic, or Bearer through the registry's token endpoint, the ACR flow), and strips
the Authorization header on cross-origin redirects (blob storage).

Retries: requests that fail with a connection error or HTTP 429/5xx are retried with exponential backoff. A blob
upload is retried as a whole (a new upload session), since a half-written session cannot be trusted.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from runtime import httplog
from runtime.adapters.credentials import ENV_PASSWORD, ENV_USERNAME, Credentials
from runtime.adapters.image import INDEX_TYPES, MANIFEST_TYPES, sha256_digest

httplog.install()  # signed blob URLs (registry redirects) must not reach the logs

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
"""Blobs larger than this are uploaded in PATCH chunks of this size; smaller ones in a single PUT."""
ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))


class RegistryError(RuntimeError):
    """A registry operation failed; the message says which, where, and why (never with a secret)."""


class AuthenticationError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


class DigestMismatchError(RegistryError):
    pass


class TransientError(RegistryError):
    """A failure worth retrying: connection error, HTTP 429 or 5xx."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reference:
    """An image reference `HOST/REPOSITORY[:TAG][@DIGEST]` (an `oci://` prefix is accepted and dropped)."""

    host: str
    repository: str
    tag: str = "latest"
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        from oras.container import Container

        text = ref.removeprefix("oci://").strip()
        if not text or "://" in text:
            raise ValueError(f"image reference {ref!r} must look like HOST/REPOSITORY:TAG (optionally oci://...)")
        try:
            parsed = Container(text)
        except ValueError as err:
            raise ValueError(f"image reference {ref!r} is not HOST/REPOSITORY:TAG: {err}") from err
        host, repository = parsed.registry, parsed.api_prefix
        if repository.startswith("localhost/"):  # docker treats a bare `localhost` as a registry host too
            host, repository = "localhost", repository.removeprefix("localhost/")
        if host == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        if not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*", repository):
            raise ValueError(f"image reference {ref!r}: repository {repository!r} must be lower-case [a-z0-9._-/]")
        if parsed.digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", parsed.digest):
            raise ValueError(f"image reference {ref!r}: digest must be sha256:<64 hex digits>")
        return cls(host=host, repository=repository, tag=parsed.tag, digest=parsed.digest)

    @property
    def endpoint_host(self) -> str:
        """Where the API lives (Docker Hub's API is not at docker.io)."""
        return "registry-1.docker.io" if self.host == "docker.io" else self.host

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when given, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def is_loopback(host: str) -> bool:
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    hostname = hostname.strip("[]")
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


ENV_INSECURE_REGISTRIES = "KAITO_INSECURE_REGISTRIES"
"""Comma-separated hosts to reach over plain http, like docker's `insecure-registries` (e.g. an in-cluster registry
that has no TLS, for callers such as the inference server's hot-load that take no --insecure flag)."""


def allows_plain_http(host: str, insecure: bool = False) -> bool:
    """Plain http only for loopback hosts (docker's rule), when asked for, or for hosts in $KAITO_INSECURE_REGISTRIES."""
    listed = {h.strip() for h in os.environ.get(ENV_INSECURE_REGISTRIES, "").split(",") if h.strip()}
    return insecure or is_loopback(host) or host in listed


def _registry_message(response: httpx.Response) -> str:
    """The registry's own error text (`{"errors": [{"code", "message"}]}`), or the HTTP reason."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        text = ""
    return text or response.reason_phrase or "no detail"


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def _repository_of(path: str) -> str | None:
    match = re.match(r"^/v2/(.+?)/(?:blobs|manifests|tags)/", path)
    return match.group(1) if match else None


def _who(credentials: Credentials | None) -> str:
    """Who we tried to be, for error messages (never the secret)."""
    if not credentials:
        return "anonymous access"
    what = "the identity token" if credentials.identity_token else f"user {credentials.username!r}"
    return f"{what} (from {credentials.source})"


class RegistryAuth(httpx.Auth):
    """Answers a registry's 401 challenge: Basic, or Bearer via the token endpoint (anonymous, Basic credentials,
    or an OAuth2 refresh token). Tokens are cached per repository; Basic is sent up front once asked for."""

    def __init__(self, host: str, credentials: Credentials | None, actions: tuple[str, ...], insecure: bool):
        self.host, self.credentials, self.actions, self.insecure = host, credentials, actions, insecure
        self._basic = False
        self._tokens: dict[str | None, str] = {}

    def auth_flow(self, request: httpx.Request):
        repository = _repository_of(request.url.path)
        if self._basic and self.credentials:
            request.headers["Authorization"] = self.credentials.basic_header()
        elif repository in self._tokens:
            request.headers["Authorization"] = f"Bearer {self._tokens[repository]}"
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if not self.credentials or self._basic:
                return  # no credentials, or they were just sent and refused: the caller reports the 401
            self._check_plain_http(request.url)
            self._basic = True
            request.headers["Authorization"] = self.credentials.basic_header()
            yield request
        elif scheme == "bearer" and params.get("realm"):
            token_response = yield self._token_request(params, repository)
            token_response.read()
            if token_response.status_code in RETRYABLE_STATUS:
                raise TransientError(
                    f"registry {self.host}: token endpoint {params['realm']}: HTTP {token_response.status_code}"
                )
            if token_response.status_code != 200:
                who = _who(self.credentials)
                raise AuthenticationError(
                    f"registry {self.host}: the token endpoint {params['realm']} refused {who}: "
                    f"HTTP {token_response.status_code} {_registry_message(token_response)}"
                )
            body = token_response.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise AuthenticationError(f"registry {self.host}: the token endpoint {params['realm']} sent no token")
            self._tokens[repository] = token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _check_plain_http(self, url: httpx.URL) -> None:
        if url.scheme == "http" and not self.insecure and not is_loopback(url.netloc.decode()):
            raise AuthenticationError(f"refusing to send credentials to {url.host} over plain http (use --insecure)")

    def _token_request(self, params: dict[str, str], repository: str | None) -> httpx.Request:
        realm = httpx.URL(params["realm"])
        scopes = []
        if params.get("scope"):
            scopes = params["scope"].split(" ")
        if repository:
            # Ask for everything this client will need in one token (docker asks pull,push for a push).
            wanted = set(self.actions)
            for scope in scopes:
                if scope.startswith(f"repository:{repository}:"):
                    wanted.update(scope.rsplit(":", 1)[1].split(","))
            scopes = [s for s in scopes if not s.startswith(f"repository:{repository}:")]
            scopes.append(f"repository:{repository}:{','.join(sorted(wanted))}")
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        creds = self.credentials
        if creds:
            self._check_plain_http(realm)
        if creds and creds.identity_token:
            # ACR/OAuth2 refresh-token grant (what `az acr login` leaves in config.json as identitytoken).
            form = dict(query, grant_type="refresh_token", refresh_token=creds.identity_token, client_id="kaito")
            return httpx.Request("POST", realm, data=form)
        headers = {"Authorization": creds.basic_header()} if creds else {}
        return httpx.Request("GET", realm.copy_merge_params(query), headers=headers)


class RegistryClient:
    """Blob and manifest operations against one registry host. Use as a context manager."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        actions: tuple[str, ...] = ("pull",),
        attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout_s: float = 120.0,
    ):
        self.host = host
        self.credentials = credentials
        self.attempts, self.backoff_s, self.max_backoff_s = attempts, backoff_s, max_backoff_s
        self.chunk_size = chunk_size
        insecure = allows_plain_http(host, insecure)
        self.base_url = f"{'http' if insecure else 'https'}://{host}"
        self._http = httpx.Client(
            base_url=self.base_url,
            auth=RegistryAuth(host, credentials, actions, insecure),
            follow_redirects=True,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers={"User-Agent": "kaito-runtime"},
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    # -- plumbing -------------------------------------------------------------------------------------------------

    def _fail(self, what: str, response: httpx.Response) -> RegistryError:
        status, detail = response.status_code, _registry_message(response)
        if status == 401:
            if self.credentials:
                return AuthenticationError(
                    f"{what}: registry {self.host} rejected the credentials of {_who(self.credentials)}: HTTP 401 {detail}"
                )
            return AuthenticationError(
                f"{what}: registry {self.host} requires credentials (HTTP 401 {detail}): pass --username with "
                f"--password-stdin, set {ENV_USERNAME}/{ENV_PASSWORD}, or use a docker config with auths.{self.host}"
            )
        if status == 403:
            return AuthenticationError(f"{what}: registry {self.host} denied access: HTTP 403 {detail}")
        if status == 404:
            return NotFoundError(f"{what}: not found (HTTP 404 {detail})")
        return RegistryError(f"{what}: HTTP {status} {detail}")

    def _request(self, what: str, method: str, url: str | httpx.URL, expect: tuple[int, ...], **kwargs) -> httpx.Response:
        """One request; raise TransientError for what a retry may cure and RegistryError for the rest."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as err:
            raise TransientError(f"{what}: {type(err).__name__}: {err or 'connection failed'}") from err
        if response.status_code in expect:
            return response
        if response.status_code in RETRYABLE_STATUS:
            retry_after = response.headers.get("Retry-After", "")
            raise TransientError(
                f"{what}: HTTP {response.status_code} {_registry_message(response)}",
                float(retry_after) if retry_after.isdigit() else None,
            )
        raise self._fail(what, response)

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except TransientError as err:
                if attempt == self.attempts:
                    raise RegistryError(f"{err} (gave up after {attempt} attempts)") from err
                wait = min(err.retry_after if err.retry_after is not None else delay, self.max_backoff_s)
                log.warning("%s (attempt %d/%d); retrying in %.1f s", err, attempt, self.attempts, wait)
                time.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")

    def _location(self, response: httpx.Response, what: str) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry sent no upload Location")
        return httpx.URL(self.base_url).join(location)  # relative or absolute; its query string is kept

    # -- blobs ----------------------------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        what = f"checking blob {digest[:19]} in {repository}"
        response = self._retrying(
            what, lambda: self._request(what, "HEAD", f"/v2/{repository}/blobs/{digest}", expect=(200, 404))
        )
        return response.status_code == 200

    def upload_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Upload `data` unless the registry has it; monolithic below `chunk_size`, PATCH chunks above."""
        digest = digest or sha256_digest(data)
        if self.blob_exists(repository, digest):
            log.debug("blob %s already in %s", digest, repository)
            return digest
        what = f"uploading blob {digest[:19]} ({len(data)} bytes) to {self.host}/{repository}"
        octets = {"Content-Type": "application/octet-stream"}

        def upload() -> None:
            started = self._request(what, "POST", f"/v2/{repository}/blobs/uploads/", expect=(202,), content=b"")
            location = self._location(started, what)
            if len(data) <= self.chunk_size:
                done = location.copy_merge_params({"digest": digest})
                self._request(what, "PUT", done, expect=(201,), content=data, headers=octets)
                return
            for start in range(0, len(data), self.chunk_size):
                chunk = data[start : start + self.chunk_size]
                headers = dict(octets, **{"Content-Range": f"{start}-{start + len(chunk) - 1}"})
                patched = self._request(what, "PATCH", location, expect=(202,), content=chunk, headers=headers)
                location = self._location(patched, what)
            self._request(what, "PUT", location.copy_merge_params({"digest": digest}), expect=(201,), content=b"")

        self._retrying(what, upload)
        return digest

    def download_blob(self, repository: str, digest: str, target: Path, size: int | None = None) -> Path:
        """Stream a blob into `target`, checking its sha256 (and size) against the manifest's."""
        what = f"downloading blob {digest[:19]} from {self.host}/{repository}"
        if not digest.startswith("sha256:"):
            raise RegistryError(f"{what}: only sha256 digests are supported")

        def download() -> Path:
            hasher, written = hashlib.sha256(), 0
            try:
                with self._http.stream("GET", f"/v2/{repository}/blobs/{digest}") as response:
                    if response.status_code != 200:
                        response.read()
                        if response.status_code in RETRYABLE_STATUS:
                            raise TransientError(f"{what}: HTTP {response.status_code} {_registry_message(response)}")
                        raise self._fail(what, response)
                    with target.open("wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            hasher.update(chunk)
                            out.write(chunk)
                            written += len(chunk)
            except httpx.TransportError as err:
                raise TransientError(f"{what}: {type(err).__name__}: {err}") from err
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != digest or (size is not None and written != size):
                target.unlink(missing_ok=True)
                raise DigestMismatchError(
                    f"{what}: content does not match the manifest (got {actual}, {written} bytes; "
                    f"expected {digest}, {size} bytes)"
                )
            return target

        return self._retrying(what, download)

    # -- manifests ------------------------------------------------------------------------------------------------

    def put_manifest(self, repository: str, reference: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest under a tag; return its digest, checked against the registry's Docker-Content-Digest."""
        digest = sha256_digest(manifest)
        what = f"pushing manifest {repository}:{reference} to {self.host}"
        response = self._retrying(
            what,
            lambda: self._request(
                what, "PUT", f"/v2/{repository}/manifests/{reference}", expect=(200, 201), content=manifest,
                headers={"Content-Type": media_type},
            ),
        )  # fmt: skip
        remote = response.headers.get("Docker-Content-Digest")
        if remote and remote != digest:
            raise DigestMismatchError(f"{what}: registry stored digest {remote}, we sent {digest}")
        return digest

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """GET a manifest or index: (body, media type, digest). The digest is checked when it can be."""
        what = f"fetching manifest {repository}:{reference} from {self.host}"
        response = self._retrying(
            what,
            lambda: self._request(
                what, "GET", f"/v2/{repository}/manifests/{reference}", expect=(200,),
                headers={"Accept": ACCEPT_MANIFESTS},
            ),
        )  # fmt: skip
        body = response.content
        digest = sha256_digest(body)
        expected = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise DigestMismatchError(f"{what}: manifest digest is {digest}, expected {expected}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            media_type = json.loads(body).get("mediaType") or media_type
        except (json.JSONDecodeError, AttributeError) as err:
            raise RegistryError(f"{what}: the manifest is not JSON") from err
        return body, media_type, digest
