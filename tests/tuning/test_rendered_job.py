"""The tuning Job as `kaito render` prints it, run on the host: its init container, then its trainer, killed with
SIGKILL after its first checkpoint and started again with the same command, as `restartPolicy: OnFailure` does.

Nothing is re-typed: the commands, the environment and the training_config.yaml come from the rendered manifests.
Paths under /mnt become folders under a work directory; `kaito` is this checkout's CLI.
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
from tests.support import free_port
from tests.tuning.helpers import REPO, FileServer, rows, sigkill_after, write

ROWS = 60  # 3 epochs of batch 1: 180 steps, so the kill lands well after the first checkpoint at step 50


def rendered_job() -> tuple[dict, dict]:
    """(the default ConfigMap, the Job's pod spec) of a tiny-llama QLoRA Workspace with URL data."""
    obj = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "tune-tiny", "namespace": "default"},
           "resource": {"labelSelector": {"matchLabels": {"apps": "tune-tiny"}}},
           "tuning": {"preset": {"name": "tiny-llama"}, "method": "qlora",
                      "input": {"urls": ["http://HOST/datasets/dolly-style/train.parquet?download=true"]},
                      "output": {"image": "127.0.0.1:5999/adapters/tiny:1", "imagePushSecret": "push"}}}
    resolved = spec.resolve(obj)
    objs = {m["kind"]: m for m in render.render(resolved.workspace, resolved.preset, resolved.fit)}
    return objs["ConfigMap"], objs["Job"]["spec"]["template"]["spec"]


class Pod:
    """Runs a rendered pod's containers on the host: /mnt/... -> <work>/mnt/..., `kaito` -> this checkout."""

    def __init__(self, work: Path, host: str):
        self.mnt = work / "mnt"
        self.host = host

    def path(self, value: str) -> str:
        value = value.replace("http://HOST", self.host)
        return str(self.mnt) + value.removeprefix("/mnt") if value.startswith("/mnt/") else value

    def command(self, container: dict) -> list[str]:
        command = [self.path(arg) for arg in container["command"]]
        assert command[0] == "kaito"
        return [sys.executable, "-m", "runtime.cli", *command[1:]]

    def env(self, container: dict) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("KAITO_OUTPUT_ROOT", "YAML_FILE_PATH")}
        env.update({e["name"]: self.path(e["value"]) for e in container.get("env", [])})
        # The host's own needs: one torch thread, no hub, and a free port for the trainer's metrics (5000 in a pod).
        env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   KAITO_METRICS_PORT=str(free_port()), PYTHONPATH=str(REPO))
        return env

    def mount_config(self, config_map: dict) -> None:
        folder = self.mnt / "config"
        folder.mkdir(parents=True)
        for key, text in config_map["data"].items():
            (folder / key).write_text(text)


def _wait_for_checkpoint(checkpoints: Path, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trainer exited before its first checkpoint: {proc.stderr.read()[-3000:]}"
        done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
        if done:
            return done[0]
        time.sleep(0.02)
    raise TimeoutError("no checkpoint")


@pytest.mark.slow
def test_the_rendered_job_resumes_after_sigkill(tmp_path):
    config_map, pod_spec = rendered_job()
    body = yaml.safe_load(config_map["data"][render.TRAINING_CONFIG_KEY])["training_config"]
    every = body["TrainingArguments"]["save_steps"]
    served = tmp_path / "served"
    write(served / "datasets" / "dolly-style" / "train.parquet", rows("messages", ROWS))

    with FileServer(served) as srv:
        pod = Pod(tmp_path / "work", srv.url)
        pod.mount_config(config_map)
        (downloader,) = pod_spec["initContainers"]
        fetched = subprocess.run(pod.command(downloader), env=pod.env(downloader), capture_output=True, text=True,
                                 timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    assert [p.name for p in (pod.mnt / "data").iterdir()] == ["train.parquet"]

    # The pusher sidecar is the adapter-images area's (tests/adapters); here the trainer alone.
    (trainer,) = [c for c in pod_spec["containers"] if c["name"] == render.TRAINER_CONTAINER]
    results = pod.mnt / "results"
    command, env = pod.command(trainer), pod.env(trainer)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = sigkill_after(first, lambda: _wait_for_checkpoint(results / "checkpoints", first))
    assert first.returncode == -signal.SIGKILL
    assert checkpoint.name == f"checkpoint-{every}"
    assert not (results / "fine_tuning_completed.txt").exists()
    killed_at = json.loads((results / "status.json").read_text())["step"]
    assert every <= killed_at < 3 * ROWS

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    # Resumed from a checkpoint the killed run wrote (a later one if it got that far), not from step 0.
    events = [json.loads(line) for line in (results / "train_log.jsonl").read_text().splitlines()]
    (resume,) = [e for e in events if e["event"] == "resume"]
    resumed_step = int(resume["checkpoint"].rsplit("-", 1)[1])
    assert resumed_step % every == 0 and every <= resumed_step <= killed_at
    assert f"resuming from {results / 'checkpoints' / f'checkpoint-{resumed_step}'}" in again.stderr
    begins = [e["step"] for e in events if e["event"] == "train_begin"]
    assert begins == [0, resumed_step]
    status = json.loads((results / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == status["total"] == 3 * ROWS
    assert status["resumed_from_step"] == resumed_step
    # One adapter and the sentinel; the checkpoints are gone once it is complete.
    assert {"adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"} <= {
        p.name for p in results.iterdir()}
    assert not (results / "checkpoints").exists()
    meta = json.loads((results / "tuning_metadata.json").read_text())
    assert meta["steps"] == 3 * ROWS and meta["base_preset"] == "tiny-llama"
