"""`kaito data fetch`: the tuning Job's data-downloader init container, run as its command line says."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.tuning.helpers import REPO, FileServer, env, rows, write


def fetch(root, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli", "data", "fetch", *args], cwd=REPO, env=env(root),
                          capture_output=True, text=True, timeout=120)


def test_fetch_names_files_by_basename_without_the_query(tmp_path):
    served = tmp_path / "served"
    parquet = write(served / "train-00000-of-00001.parquet", rows("messages", 6))
    jsonl = write(served / "more" / "extra.jsonl", rows("prompt_completion", 3))
    with FileServer(served) as srv:
        done = fetch(tmp_path, "--to", str(tmp_path / "data"),
                     f"{srv.url}/train-00000-of-00001.parquet?download=true", f"{srv.url}/more/extra.jsonl#part")
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["extra.jsonl", "train-00000-of-00001.parquet"]
        assert (tmp_path / "data" / parquet.name).read_bytes() == parquet.read_bytes()
        assert (tmp_path / "data" / jsonl.name).read_bytes() == jsonl.read_bytes()
        # An init container that runs again (the pod restarted) keeps what it already has.
        again = fetch(tmp_path, "--to", str(tmp_path / "data"), f"{srv.url}/train-00000-of-00001.parquet?download=true")
        assert again.returncode == 0 and "already downloaded" in again.stderr
        assert len(srv.handler.requests) == 2


def test_a_failed_url_is_named_without_its_credentials(tmp_path):
    with FileServer(tmp_path) as srv:
        host = srv.url.removeprefix("http://")
        done = fetch(tmp_path, "--to", str(tmp_path / "data"),
                     f"http://alice:hunter2@{host}/missing.parquet?sv=2024&sig=s3cr3t")
    assert done.returncode == 1
    assert f"error: data download failed: http://{host}/missing.parquet: HTTP 404" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "s3cr3t" not in done.stderr + done.stdout


def test_a_dead_server_is_retried_then_named(tmp_path):
    with FileServer(tmp_path) as srv:
        url = srv.url
    done = fetch(tmp_path, "--to", str(tmp_path / "data"), "--retries", "2", f"{url}/d.parquet?token=abc")
    assert done.returncode == 1
    assert len(re.findall(r"attempt \d failed", done.stderr)) == 3  # the first try and two retries, each logged
    assert f"{url}/d.parquet: failed after 3 attempts" in done.stderr and "token=abc" not in done.stderr


def test_two_urls_with_one_file_name_are_refused(tmp_path):
    done = fetch(tmp_path, "--to", str(tmp_path / "data"), "https://a.example.com/x/train.parquet",
                 "https://b.example.com/y/train.parquet?download=true")
    assert done.returncode == 1
    assert "would both be saved as train.parquet" in done.stderr
    assert not (tmp_path / "data").exists()
