"""Download training data from http(s) URLs: size limit, retries, resume with Range, sha256 logged.

Kaito's data-downloader init container does `curl` with 3 retries into /mnt/data; ours runs `kaito data fetch`
(this module) in the preset image, and the trainer uses it for URL sources too. A retry continues a partial file
(`<name>.part`) where the server honours `Range`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from runtime import httplog

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A URL could not be fetched (after retries), or its body is over the size limit."""


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def file_name(url: str) -> str:
    """The basename of the URL path, without query or fragment (as Kaito's downloader names files)."""
    name = Path(unquote(urlparse(url).path)).name
    return name or "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_redact = httplog.redact
httplog.install()  # query strings (SAS tokens) must not reach the logs


def download(url: str, dest_dir: Path, *, max_bytes: int, retries: int = 3, timeout: float = 60.0,
             backoff_s: float = 1.0) -> Path:
    """Fetch `url` into `dest_dir` and return the file. An existing complete file is reused."""
    import httpx

    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / file_name(url)
    if target.exists():
        log.info("data %s already downloaded: %s", _redact(url), target)  # data.prepare logs its sha256
        return target
    part = target.with_name(target.name + ".part")
    last_error: Exception | str = "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * attempt)
        have = part.stat().st_size if part.exists() else 0
        # identity: byte ranges of a compressed transfer would not line up with the file on disk
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as resp:
                if resp.status_code == 416 and have:  # nothing left to fetch: the part is whole
                    break
                if resp.status_code not in (200, 206):
                    last_error = f"HTTP {resp.status_code}"
                    if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                        raise DownloadError(f"{_redact(url)}: {last_error}")
                    continue
                if resp.status_code == 200 and have:
                    log.info("server ignored Range; restarting %s from byte 0", _redact(url))
                    have = 0
                length = resp.headers.get("content-length")
                if length is not None and have + int(length) > max_bytes:
                    raise DownloadError(f"{_redact(url)} is {have + int(length)} bytes, over the limit of "
                                        f"{max_bytes} (DatasetConfig.max_download_bytes)")
                with part.open("ab" if have else "wb") as out:
                    written = have
                    for chunk in resp.iter_bytes():  # as it arrives, so a cut keeps what came
                        written += len(chunk)
                        if written > max_bytes:
                            raise DownloadError(f"{_redact(url)} is over the limit of {max_bytes} bytes "
                                                "(DatasetConfig.max_download_bytes)")
                        out.write(chunk)
                if length is not None and written != have + int(length):
                    last_error = f"short body ({written} of {have + int(length)} bytes)"
                    continue
                break
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        except httpx.HTTPError as err:
            last_error = err
            log.warning("download %s attempt %d failed: %s", _redact(url), attempt + 1, err)
    else:
        raise DownloadError(f"{_redact(url)}: failed after {retries + 1} attempts: {last_error}")
    if not part.exists() or part.stat().st_size == 0:
        raise DownloadError(f"{_redact(url)}: empty body")
    part.rename(target)
    # The sha256 is logged once, by data.prepare, which hashes every file it reads.
    log.info("downloaded %s -> %s (%d bytes)", _redact(url), target, target.stat().st_size)
    return target


def check_distinct_names(urls: list[str]) -> None:
    """Refuse URLs that would be saved under one file name (the second would silently reuse the first)."""
    seen: dict[str, str] = {}
    for url in urls:
        name = file_name(url)
        if name in seen:
            raise DownloadError(f"{_redact(seen[name])} and {_redact(url)} would both be saved as {name}")
        seen[name] = url


def fetch_all(urls: list[str], dest_dir: Path, *, max_bytes: int, retries: int) -> list[Path]:
    """Download every URL into `dest_dir`, each named by its basename without the query string."""
    bad = [_redact(u) for u in urls if not is_url(u)]
    if bad:
        raise DownloadError(f"not an http(s) URL: {', '.join(bad)}")
    check_distinct_names(urls)
    return [download(url, dest_dir, max_bytes=max_bytes, retries=retries) for url in urls]
