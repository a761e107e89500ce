"""The servers the serving benchmark compares, each a process on a loopback port, on the same model folder.

- `ours-transformers`: `python -m runtime.inference` (transformers' continuous batching).
- `ours-vllm`: our vLLM backend (`runtime.inference.vllm_backend`, from `.venv-vllm`).
- `vllm-bare`: `python -m vllm.entrypoints.openai.api_server` with the very engine flags ours derives
  (`--print-args`), `--dtype float32`: the peer.
- `pipeline`: `transformers.pipeline` behind FastAPI, one request at a time (the shape of Kaito's transformers
  runtime; benchmarks/serving/baseline.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", VLLM_NO_USAGE_STATS="1",
               VLLM_DO_NOT_TRACK="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


class Server:
    """A server process; `wait_ready` returns its start-to-healthy seconds; `stop` ends its process group."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], log_dir: Path):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log_path}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@dataclass(frozen=True)
class Spec:
    name: str
    cmd: list[str]
    model: str
    """The name the server serves the model under."""


def our_vllm_argv(python: str, preset: str, model_path: str | None, port: int, config: str | None = None) -> list[str]:
    argv = [python, "-m", "runtime.inference.vllm_backend", preset, "--host", "127.0.0.1", "--port", str(port),
            "--adapters-dir", "/nonexistent/no-adapters"]
    if model_path:
        argv += ["--model-path", model_path]
    if config:
        argv += ["--config", config]
    return argv


def engine_argv(python: str, preset: str, model_path: str | None, port: int, env: dict[str, str],
                config: str | None = None) -> list[str]:
    """What our vLLM server passes to vLLM (so bare vLLM gets the very same flags)."""
    done = subprocess.run(our_vllm_argv(python, preset, model_path, port, config) + ["--print-args"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"our server's --print-args failed:\n{done.stderr[-3000:]}")
    return shlex.split(done.stdout.strip().splitlines()[-1])


def specs(names: list[str], preset: str, model_dir: str, max_batch: int, env: dict[str, str]) -> list[Spec]:
    """Each server's command line, on its own free port."""
    out = []
    for name in names:
        port = free_port()
        if name == "ours-transformers":
            cmd = [sys.executable, "-m", "runtime.inference", preset, "--model-path", model_dir, "--host",
                   "127.0.0.1", "--port", str(port), "--adapters-dir", "/nonexistent/no-adapters",
                   "--max-batch-size", str(max_batch)]
        elif name == "ours-vllm":
            cmd = our_vllm_argv(str(VLLM_PYTHON), preset, model_dir, port) + ["--max-batch-size", str(max_batch)]
        elif name == "vllm-bare":
            argv = engine_argv(str(VLLM_PYTHON), preset, model_dir, port, env)
            if "--dtype" not in argv:
                argv += ["--dtype", "float32"]
            cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", *argv,
                   "--max-num-seqs", str(max_batch)]
        elif name == "pipeline":
            cmd = [sys.executable, "-m", "benchmarks.serving.baseline", model_dir, "--port", str(port)]
        else:
            raise SystemExit(f"unknown server {name!r}")
        out.append(Spec(name, cmd, "baseline" if name == "pipeline" else preset))
    return out


def port_of(spec: Spec) -> int:
    return int(spec.cmd[spec.cmd.index("--port") + 1])
