"""Interrupted pushes and pulls are retried: a small loopback proxy in front of the real registry injects one
failure (HTTP 503, or a connection dropped without an answer) and forwards everything else unchanged."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from runtime.adapters.oci import RegistryError, pull, push_adapter
from runtime.adapters.registry import RegistryClient
from tests.support import free_port

pytestmark = pytest.mark.registry

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class Fault:
    method: str
    path_contains: str
    action: int | str
    """An HTTP status to answer with, or "drop" to close the connection without an answer."""
    times: int = 1


@dataclass
class FaultyProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str, int | str]] = field(default_factory=list)

    def __post_init__(self):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._client = httpx.Client(base_url=self.upstream, timeout=30)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path_contains in path:
                fault.times -= 1
                return fault
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, self.path)
                if fault and fault.action == "drop":
                    proxy.seen.append((self.command, self.path, "drop"))
                    self.close_connection = True
                    self.connection.shutdown(2)  # no answer at all
                    return
                if fault:
                    proxy.seen.append((self.command, self.path, fault.action))
                    self.send_response(fault.action)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                # The registry builds Location URLs from Host: keep ours so that uploads come back through us.
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = proxy._client.request(self.command, self.path, content=body, headers=headers)
                proxy.seen.append((self.command, self.path, upstream.status_code))
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(upstream.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        return Handler


def _same(a, b):
    return (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()


def test_upload_answered_503_once_is_retried_in_a_new_session(registry, adapter_dir, tmp_path):
    fault = Fault("PUT", "/blobs/uploads/", 503)
    with FaultyProxy(registry.url, [fault]) as proxy:
        digest = push_adapter(adapter_dir, f"{proxy.host}/adapters/retry503:v1")
        assert fault.times == 0
        assert ("PUT", fault.action) in [(m, s) for m, _, s in proxy.seen]
        uploads_started = [p for m, p, s in proxy.seen if m == "POST" and s == 202]
        assert len(uploads_started) == 3  # layer twice (the first session broke), config once
    assert _same(adapter_dir, pull(f"{registry.host}/adapters/retry503@{digest}", tmp_path / "out"))


def test_dropped_connection_during_a_chunked_upload_is_retried(registry, adapter_dir, tmp_path):
    fault = Fault("PATCH", "/blobs/uploads/", "drop")
    with FaultyProxy(registry.url, [fault]) as proxy:
        push_adapter(adapter_dir, f"{proxy.host}/adapters/retrydrop:v1", chunk_size=8 * 1024)
        assert fault.times == 0
        assert sum(1 for m, _, s in proxy.seen if m == "PATCH" and s == 202) >= 4  # chunks went through
    assert _same(adapter_dir, pull(registry.ref("adapters/retrydrop", "v1"), tmp_path / "out"))


def test_pull_survives_a_flaky_manifest_and_blob_fetch(registry, adapter_dir, tmp_path):
    push_adapter(adapter_dir, registry.ref("adapters/flakypull", "v1"))
    faults = [Fault("GET", "/manifests/v1", 502), Fault("GET", "/blobs/sha256:", "drop")]
    with FaultyProxy(registry.url, faults) as proxy:
        out = pull(f"{proxy.host}/adapters/flakypull:v1", tmp_path / "out")
        assert all(f.times == 0 for f in faults)
    assert _same(adapter_dir, out)


def test_persistent_failure_gives_up_with_the_reason(registry, adapter_dir):
    with FaultyProxy(registry.url, [Fault("POST", "/blobs/uploads/", 503, times=100)]) as proxy:
        with RegistryClient(proxy.host, actions=("pull", "push"), attempts=3, backoff_s=0.01) as client:
            with pytest.raises(RegistryError, match=r"HTTP 503.*gave up after 3 attempts"):
                client.upload_blob("adapters/down", b"some bytes")
        assert sum(1 for m, _, s in proxy.seen if m == "POST") == 3
