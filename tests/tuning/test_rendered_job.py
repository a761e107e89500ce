"""The tuning Job as `kaito render` prints it, run on the host by `kaito run --local --engine process`: its init
container downloads the data over HTTP, its trainer is killed with SIGKILL after its first checkpoint, and the
engine starts it again with the same command, as `restartPolicy: OnFailure` does; it resumes and finishes.

Nothing is re-typed: the engine reads the commands, the environment and the training_config.yaml from the rendered
pod (paths under /mnt become folders; `kaito` is this checkout's CLI). The podman engine's run of the same flow,
with the pusher sidecar, is the e2e tier's (tests/e2e/test_local_tuning.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runtime.controller import render, spec
from runtime.kaito import TRAINING_CONFIG_KEY
from tests.support import free_port
from tests.tuning.helpers import REPO, FileServer, rows, write

pytestmark = pytest.mark.slow

ROWS = 60  # 3 epochs of batch 1: 180 steps, so the kill lands well after the first checkpoint at step 50


def workspace(data_url: str, out: Path) -> dict:
    """A tiny-llama QLoRA Workspace with URL data (a `?download=true` query, as the seed's) and a hostPath output."""
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "tune-tiny", "namespace": "default"},
            "resource": {"labelSelector": {"matchLabels": {"apps": "tune-tiny"}}},
            "tuning": {"preset": {"name": "tiny-llama"}, "method": "qlora",
                       "input": {"urls": [f"{data_url}/datasets/dolly-style/train.parquet?download=true"]},
                       "output": {"volumeSource": {"hostPath": {"path": str(out)}}}}}


def _save_steps(obj: dict) -> int:
    """The checkpoint interval in the training_config.yaml that `kaito render` writes for this Workspace."""
    resolved = spec.resolve(obj)
    (config_map,) = [m for m in render.render(resolved.workspace, resolved.preset, resolved.fit)
                     if m["kind"] == "ConfigMap"]
    return yaml.safe_load(config_map["data"][TRAINING_CONFIG_KEY])["training_config"]["TrainingArguments"]["save_steps"]


def _trainer_pid(out: Path) -> int | None:
    """The `kaito tune` process the engine started for this output folder (its command names the folder)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        if b"tune" in argv and str(out).encode() in argv:
            return int(entry.name)
    return None


def _wait_for_checkpoint(checkpoints: Path, run: subprocess.Popen, log: Path, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the run ended before the first checkpoint: {log.read_text()[-3000:]}"
        done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        if done:
            return done[0]
        time.sleep(0.02)
    raise TimeoutError("no checkpoint")


def test_the_rendered_job_restarts_a_killed_trainer_and_it_resumes(tmp_path):
    served, out, log = tmp_path / "served", tmp_path / "out", tmp_path / "run.log"
    every = _save_steps(workspace("http://unused", out))
    write(served / "datasets" / "dolly-style" / "train.parquet", rows("messages", ROWS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "KAITO_METRICS_PORT": str(free_port())}  # the trainer's metrics: 5000 in a pod, a free port on this host

    with FileServer(served) as srv, open(log, "w") as sink:
        ws = tmp_path / "ws.yaml"
        ws.write_text(yaml.safe_dump(workspace(srv.url, out)))
        run = subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", "-f", str(ws), "--local", "--engine",
                                "process"], stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            checkpoint = _wait_for_checkpoint(out / "checkpoints", run, log)
            os.kill(_trainer_pid(out), signal.SIGKILL)
            killed_at = json.loads((out / "status.json").read_text())["step"]
            run.wait(timeout=600)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    output = log.read_text()
    assert run.returncode == 0, output[-3000:]
    assert checkpoint.name == f"checkpoint-{every}"
    assert every <= killed_at < 3 * ROWS
    assert "container trainer failed (exit 137); restarting it in 1 s (1 of 6, restartPolicy: OnFailure)" in output
    # Resumed from a checkpoint the killed run wrote (a later one if it got that far), not from step 0.
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    (resume,) = [e for e in events if e["event"] == "resume"]
    resumed_step = int(resume["checkpoint"].rsplit("-", 1)[1])
    assert resumed_step % every == 0 and every <= resumed_step <= killed_at
    assert f"resuming from {out / 'checkpoints' / f'checkpoint-{resumed_step}'}" in output
    assert [e["step"] for e in events if e["event"] == "train_begin"] == [0, resumed_step]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == status["total"] == 3 * ROWS
    assert status["resumed_from_step"] == resumed_step
    # One adapter and the sentinel; the checkpoints are gone once it is complete.
    assert {"adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"} <= {
        p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()
    meta = json.loads((out / "tuning_metadata.json").read_text())
    assert meta["steps"] == 3 * ROWS and meta["base_preset"] == "tiny-llama"
