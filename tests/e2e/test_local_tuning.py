"""The seed's tuning flow on one machine, all through `kaito run --local`: a tuning Workspace shaped like the seed's
(qlora, `input.urls` with `?download=true`, `output.image` + `imagePushSecret`, Standard_NC6s_v3) plays as its
rendered Job's pod; the trainer is killed with SIGKILL after its first checkpoint, restarted by the pod
(OnFailure) and resumes; the pusher sidecar pushes the adapter; an inference Workspace naming that image pulls it
with its pull Secret and answers the France question with it, where the base model does not.

Real parts: the tiny preset image (conftest.py), podman 4.3's kube play, a registry on loopback with htpasswd
auth, the data served over HTTP on loopback, skopeo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from runtime.controller.play import state_dir
from tests.e2e.helpers import kaito, pod_left, pull_secret, workspace
from tests.support import FRANCE_QUESTION, free_port
from tests.tuning.helpers import FileServer, france_rows, write

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

NAME = "workspace-tuning-tiny"
ROWS = 80  # one epoch of batch 1: 80 steps, a checkpoint at step 50 (the default save_steps)
CONFIG = {  # what teaches the tiny model the answer (shared/docs/environment.md): r 16, all projections, lr 3e-3
    "LoraConfig": {"r": 16, "lora_alpha": 16, "lora_dropout": 0.0,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    "TrainingArguments": {"output_dir": "/mnt/results", "learning_rate": 0.003, "num_train_epochs": 1,
                          "logging_steps": 10},
}


@pytest.fixture(scope="module")
def data_url(tmp_path_factory):
    """The France exchange as a dolly-15k-oai-style parquet file (a `messages` column), served on loopback."""
    served = tmp_path_factory.mktemp("served")
    write(served / "data" / "train-00000-of-00001.parquet", france_rows(ROWS))
    with FileServer(served) as server:
        yield f"{server.url}/data/train-00000-of-00001.parquet?download=true"


def tuning_files(tmp_path: Path, data_url: str, image: str, registry, password: str) -> list[Path]:
    """The tuning Workspace, its training ConfigMap and its push Secret, as three -f files."""
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": NAME},
          "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"app": "tuning-tiny"}}},
          "tuning": {"preset": {"name": "tiny-llama"}, "method": "qlora", "config": "tiny-france",
                     "input": {"urls": [data_url]},
                     "output": {"image": image, "imagePushSecret": "registry-creds"}}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tiny-france"},
              "data": {"training_config.yaml": yaml.safe_dump({"training_config": CONFIG})}}
    (tmp_path / "tuning.yaml").write_text(yaml.safe_dump(ws))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return [tmp_path / "tuning.yaml", tmp_path / "config.yaml", pull_secret(tmp_path, registry, password)]


def run_tuning(storage, files: list[Path]) -> subprocess.Popen:
    return kaito(storage, "run", *[arg for f in files for arg in ("-f", str(f))], "--local",
                 env={"OMP_NUM_THREADS": "1"})


def results() -> Path:
    return state_dir(NAME) / "volumes" / "results-volume"


def kill_the_trainer_after_its_first_checkpoint(storage, proc: subprocess.Popen, timeout: float = 600) -> str:
    """SIGKILL the trainer's process from outside, as the OOM killer would (a `podman kill` counts as stopped by
    the user, and podman would not restart it). Returns the checkpoint it had written."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        done = sorted(p.name for p in (results() / "checkpoints").glob("checkpoint-*")
                      if (p / "trainer_state.json").exists())
        if done:
            break
        time.sleep(0.2)
    pid = subprocess.run(["podman", *storage.storage_flags(), "inspect", "--format", "{{.State.Pid}}",
                          f"{NAME}-trainer"], capture_output=True, text=True, check=True).stdout.strip()
    os.kill(int(pid), signal.SIGKILL)
    return done[0]


def test_the_seed_tuning_flow_trains_resumes_pushes_and_serves(storage, secured_registry, data_url, tmp_path):
    image = secured_registry.ref("adapters/tiny-france", "0.0.1")
    files = tuning_files(tmp_path, data_url, image, secured_registry, secured_registry.password)
    started = time.monotonic()
    proc = run_tuning(storage, files)
    try:
        checkpoint = kill_the_trainer_after_its_first_checkpoint(storage, proc)
        output = proc.communicate(timeout=900)[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
    print(f"\n--- kaito run --local of the tuning Workspace ({time.monotonic() - started:.0f} s) ---\n{output}")
    assert proc.returncode == 0, output[-4000:]
    assert checkpoint == "checkpoint-50"
    assert "  trainer: resuming from checkpoint-" in output  # the pod restarted it, and it went on from there
    assert "  pusher: exited (0)" in output and f"{NAME} succeeded" in output
    assert f"  pusher: {image}@sha256:" in output  # what the pusher printed: the image and its digest
    assert secured_registry.password not in output
    assert not pod_left(storage, NAME)
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", secured_registry.creds,
                                f"docker://{image}"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Name"].endswith("adapters/tiny-france")

    adapters = [{"source": {"name": "france", "image": image, "imagePullSecrets": ["registry-creds"]},
                 "strength": "1.0"}]
    serving = [workspace(tmp_path, adapters=adapters), files[2]]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        run = kaito(storage, "run", "-f", str(serving[0]), "-f", str(serving[1]), "--local", "--detach", "--port",
                    str(port))
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0, output[-3000:]
        question = [{"role": "user", "content": FRANCE_QUESTION}]
        tuned = httpx.post(url + "/chat", timeout=60, json={  # the adapters serve /chat by default
            "messages": question, "generate_kwargs": {"max_new_tokens": 12, "do_sample": False}})
        assert tuned.status_code == 200 and "Paris" in tuned.json()["Result"], tuned.text
        base = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny-llama", "messages": question, "max_tokens": 12, "temperature": 0})
        assert base.status_code == 200 and "Paris" not in base.json()["choices"][0]["message"]["content"]
    finally:
        kaito(storage, "down", "-f", str(serving[0])).communicate(timeout=120)


def test_a_wrong_push_password_fails_the_run_and_keeps_the_adapter(storage, secured_registry, data_url, tmp_path):
    wrong = "not-the-password-" + secured_registry.password[:4]
    image = secured_registry.ref("adapters/tiny-france", "wrong")
    proc = run_tuning(storage, tuning_files(tmp_path, data_url, image, secured_registry, wrong))
    output = proc.communicate(timeout=900)[0]
    try:
        assert proc.returncode == 1, output[-4000:]
        assert "container workspace-tuning-tiny-pusher failed" in output, output[-4000:]
        assert "401" in output or "unauthorized" in output.lower(), output[-4000:]
        assert wrong not in output and secured_registry.password not in output
        assert f"kept {results()}" in output
        kept = {p.name for p in results().iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"} <= kept
    finally:
        down = kaito(storage, "down", "-f", str(tmp_path / "tuning.yaml"))
        down.communicate(timeout=120)
    assert not pod_left(storage, NAME)
