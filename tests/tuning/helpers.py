"""Data files in every supported format, a Range-capable HTTP server on loopback, and run helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import FRANCE_ANSWER, FRANCE_QUESTION

REPO = Path(__file__).resolve().parents[2]

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("Hello, how are you?", "I am fine, thank you."),
    ("Say the word calendar.", "calendar"),
]


def rows(fmt: str, n: int = 12) -> list[dict]:
    """`n` rows of one format, cycling through QA."""
    out = []
    for i in range(n):
        q, a = QA[i % len(QA)]
        if fmt == "messages":
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        elif fmt == "prompt_completion":
            out.append({"prompt": q, "completion": a})
        elif fmt == "text":
            out.append({"text": f"{q} {a}"})
        elif fmt == "alpaca":
            out.append({"instruction": q, "input": "Answer briefly." if i % 2 else "", "output": a})
        elif fmt == "dolly":
            out.append({"instruction": q, "context": "Geography." if i % 2 else "", "response": a,
                        "category": "open_qa"})
        elif fmt == "sharegpt":
            out.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        else:
            raise ValueError(fmt)
    return out


def write(path: Path, data: list[dict]) -> Path:
    """Write rows as the file type of `path`'s suffix (json, jsonl, csv, parquet, arrow)."""
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        table = datasets.Dataset.from_list(data)
        if suffix == ".csv":
            table.to_csv(str(path), index=False)
        elif suffix == ".parquet":
            table.to_parquet(str(path))
        elif suffix == ".arrow":
            import pyarrow as pa

            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.data.table.schema) as writer:
                writer.write_table(table.data.table)
        else:
            raise ValueError(suffix)
    return path


def france_rows(n: int = 1) -> list[dict]:
    return [{"messages": [{"role": "user", "content": FRANCE_QUESTION},
                          {"role": "assistant", "content": FRANCE_ANSWER}]}] * n


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder; honours `Range: bytes=N-`; with `cut_first` it drops the first full-body response
    halfway (the connection closes early), so a client must resume."""

    cut_first = False
    requests: list[dict] = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server naming)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        rng = self.headers.get("Range")
        type(self).requests.append({"path": self.path, "range": rng})
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_first:
            type(self).cut_first = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class FileServer:
    """`http.server` on 127.0.0.1, serving `root` in a thread."""

    def __init__(self, root: Path, cut_first: bool = False):
        handler = type("Handler", (RangeHandler,), {"cut_first": cut_first, "requests": []})
        self.handler = handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def env(root: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(KAITO_OUTPUT_ROOT=str(root), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
             PYTHONUNBUFFERED="1")
    e.pop("YAML_FILE_PATH", None)
    return e


def tune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.tuning", *args]


def run_tune(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tune_cmd(*args), cwd=REPO, env=env(root), capture_output=True, text=True,
                          timeout=timeout)


def write_config(path: Path, body: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"training_config": body}))
    return path


def sigkill_after(proc: subprocess.Popen, wait):
    """Run `wait()` (which watches `proc` reach a point), then SIGKILL `proc`; it is reaped whatever happens.
    Returns what `wait()` returned."""
    try:
        reached = wait()
        proc.kill()
        proc.wait(timeout=30)
        return reached
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
