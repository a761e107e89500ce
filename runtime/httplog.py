"""Keep secrets out of httpx's request log lines.

httpx logs every request URL at INFO. Query strings can carry credentials (SAS tokens on data URLs, signed blob
URLs a registry redirects to), so every module that makes HTTP requests calls `install()` to log them redacted.
"""

from __future__ import annotations

import logging
from urllib.parse import urlparse


def redact(url: str) -> str:
    """The URL without credentials or query string: safe for logs."""
    parts = urlparse(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class RedactURLs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(str(a)) if type(a).__name__ == "URL" else a for a in record.args)
        return True


def install() -> None:
    """Add the filter to the httpx logger once (idempotent)."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, RedactURLs) for f in httpx_log.filters):
        httpx_log.addFilter(RedactURLs())
