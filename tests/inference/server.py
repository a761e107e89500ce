"""Start the real server (`python -m runtime.inference`) in a subprocess on a free port, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port, wait_http


@dataclass
class ServerInfo:
    """What the conformance suite needs to know about a running server."""

    base_url: str
    """http://host:port (no /v1)."""
    model: str
    """The base model's served name."""
    api_key: str = "unused"
    log: Path | None = None
    extra: dict = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@contextmanager
def run_server(args: list[str], model: str, env: dict[str, str] | None = None, timeout: float = 180.0,
               api_key: str | None = None):
    """Run `python -m runtime.inference ARGS --port P` until the block ends; yields a ServerInfo once /health is 200."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="kaito-serve-", suffix=".log")[1])
    # A key set in the developer's shell must not leak in: the test decides (env=, api_key=).
    inherited = {k: v for k, v in os.environ.items() if k not in ("KAITO_API_KEY", "API_KEY", "VLLM_API_KEY")}
    full_env = {**inherited, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    cmd = [sys.executable, "-m", "runtime.inference", *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=Path(__file__).resolve().parents[2])
    info = ServerInfo(f"http://127.0.0.1:{port}", model, api_key or "unused", log, extra={"proc": proc})
    try:
        try:
            wait_http(f"{info.base_url}/health", timeout=timeout, proc=proc)
        except Exception as err:
            raise RuntimeError(f"server did not start: {err}\n{info.log_text()[-3000:]}") from err
        yield info
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
