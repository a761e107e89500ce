"""A stand-in for the Hugging Face Hub's download API, serving one folder as repo@revision over HTTP.

A fake, because no model hub can be reached from the test machines. It speaks just what huggingface_hub's
`snapshot_download(repo, revision=<commit>)` uses: the recursive tree listing and `resolve` (HEAD + GET) for each
file. It records the `Authorization` header of every request, so a test can check that a build sent the token.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repo: str, revision: str, folder: Path, token: str | None = None):
        self.repo, self.revision, self.folder, self.token = repo, revision, Path(folder), token
        self.authorizations: list[str | None] = []
        self.downloads: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization")
                hub.authorizations.append(auth)
                if hub.token and auth != f"Bearer {hub.token}":
                    self._send(401, b'{"error": "gated repo: a valid token is needed"}', {"X-Error-Code": "GatedRepo"})
                    return False
                return True

            def _send(self, status: int, body: bytes, headers: dict | None = None, head: bool = False):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool):
                if not self._authorised():
                    return
                path = unquote(urlparse(self.path).path)
                tree = f"/api/models/{hub.repo}/tree/{hub.revision}"
                resolve = f"/{hub.repo}/resolve/{hub.revision}/"
                if path.rstrip("/") == tree:
                    entries = [{"type": "file", "path": str(p.relative_to(hub.folder)), "size": p.stat().st_size,
                                "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in hub._files()]
                    return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, head)
                if path.startswith(resolve):
                    file = hub.folder / path[len(resolve):]
                    if not file.is_file():
                        return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head)
                    data = file.read_bytes()
                    if not head:
                        hub.downloads.append(path[len(resolve):])
                    etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                    return self._send(200, data, {"ETag": etag, "X-Repo-Commit": hub.revision,
                                                  "Content-Type": "application/octet-stream"}, head)
                return self._send(404, b'{"error": "not found"}', {"X-Error-Code": "RepoNotFound"}, head)

            def do_GET(self):  # noqa: N802
                self._route(head=False)

            def do_HEAD(self):  # noqa: N802
                self._route(head=True)

        return Handler
