"""Faults, for real: `python -m runtime.tuning` in a subprocess is stopped by SIGTERM (checkpoint, exit 143) or
killed by SIGKILL mid-run, restarted, and must end with the same adapter as an uninterrupted run.

Tolerance: max |difference| of every adapter tensor <= 1e-6 (measured 0.0 on CPU: seeded LoRA init, the same data
order, optimizer/scheduler/RNG state restored, float32 adapters)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from tests.support import free_port
from tests.tuning.helpers import REPO, env, rows, run_tune, sigkill_after, tune_cmd, write

STEPS, SAVE_EVERY = 30, 10
TOLERANCE = 1e-6


def _common(data, method="qlora"):
    return ["--preset", "tiny-llama", "--method", method, "--data", str(data), "--max-steps", str(STEPS),
            "--save-steps", str(SAVE_EVERY), "--learning-rate", "1e-3"]


def _adapter(path):
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _wait_for_step(out, proc, step: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trainer exited early: {proc.stderr.read()[-2000:]}"
        try:
            status = json.loads((out / "status.json").read_text())
            if status.get("step", 0) >= step:
                return status
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("ref")
    data = write(root / "d.jsonl", rows("messages", 24))
    done = run_tune(root, *_common(data), "--output-dir", str(root / "out"), "--metrics-port", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    return _adapter(root / "out")


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_resume_matches(tmp_path, reference):
    data = write(tmp_path / "d.jsonl", rows("messages", 24))
    out = tmp_path / "out"
    port = free_port()
    proc = subprocess.Popen(tune_cmd(*_common(data), "--output-dir", str(out), "--metrics-port", str(port)),
                            cwd=REPO, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = _wait_for_step(out, proc, 12)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text  # Prometheus, while training
        os.kill(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "kaito_tuning_step" in metrics and "kaito_tuning_tokens_per_second" in metrics
    assert f"kaito_tuning_total_steps {float(STEPS)}" in metrics
    assert {"step", "total", "loss", "tokens_per_second", "eta_seconds"} <= set(status)
    stopped = json.loads((out / "status.json").read_text())
    assert stopped["state"] == "interrupted" and SAVE_EVERY < stopped["step"] < STEPS
    assert (out / "checkpoints" / f"checkpoint-{stopped['step']}" / "trainer_state.json").exists()
    assert any(json.loads(line)["event"] == "log" for line in stdout.splitlines() if line.startswith("{"))

    resumed = run_tune(tmp_path, *_common(data), "--output-dir", str(out), "--metrics-port", "0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["checkpoint"] for e in events if e["event"] == "resume"] == [
        str(out / "checkpoints" / f"checkpoint-{stopped['step']}")]
    assert _max_diff(_adapter(out), reference) <= TOLERANCE


@pytest.mark.slow
def test_sigkill_then_restart_resumes_from_last_checkpoint(tmp_path, reference):
    data = write(tmp_path / "d.jsonl", rows("messages", 24))
    out = tmp_path / "out"
    proc = subprocess.Popen(tune_cmd(*_common(data), "--output-dir", str(out), "--metrics-port", "0"),
                            cwd=REPO, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sigkill_after(proc, lambda: _wait_for_step(out, proc, SAVE_EVERY + 3))
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "fine_tuning_completed.txt").exists()
    restarted = run_tune(tmp_path, *_common(data), "--output-dir", str(out), "--metrics-port", "0")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    resumes = [e["checkpoint"] for e in events if e["event"] == "resume"]
    assert resumes and resumes[0].endswith(f"checkpoint-{SAVE_EVERY}")
    assert _max_diff(_adapter(out), reference) <= TOLERANCE
    # Done means done: a further run neither trains nor touches the adapter.
    before = (out / "adapter_model.safetensors").stat().st_mtime_ns
    again = run_tune(tmp_path, *_common(data), "--output-dir", str(out), "--metrics-port", "0")
    assert again.returncode == 0 and "training already completed" in again.stderr
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == before
