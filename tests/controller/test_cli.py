"""`kaito render | apply | get workspace | run --local`, and the deploy/ manifests (CRD, RBAC, controller).

`apply` and `get` talk to the in-process FAKE API server (tests/controller/fake_apiserver.py; no
kube-apiserver can run here) through the real `kubernetes` client, as they would to a cluster.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

from runtime.cli import main
from runtime.controller import cli as controller_cli
from runtime.controller import kube
from tests.controller.examples import workspace_examples
from tests.controller.strict import validate_strict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TINY = EXAMPLES / "local" / "kaito_workspace_tiny_llama.yaml"
TUNING = EXAMPLES / "fine-tuning" / "kaito_workspace_tuning_phi_3.yaml"


def test_render_prints_valid_manifests(capsys):
    assert main(["render", "-f", str(TUNING), "-n", "team-a"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == "team-a"
        validate_strict(doc)


def test_render_reports_field_paths(tmp_path, capsys):
    bad = yaml.safe_load(TUNING.read_text())
    bad["tuning"]["method"] = "dpo"
    del bad["tuning"]["output"]["imagePushSecret"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["render", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tuning.method: must be lora or qlora, got 'dpo'" in err
    assert "tuning.output.imagePushSecret" in err


def test_render_rejects_files_without_one_workspace(tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text(TINY.read_text() + "---\n" + TINY.read_text())
    assert main(["render", "-f", str(path)]) == 2
    assert "exactly one Workspace, found 2" in capsys.readouterr().err
    assert main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2


def test_workspace_table_matches_the_seed():
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    items = [{"metadata": {"name": "workspace-phi-3", "creationTimestamp": "2026-01-01T11:55:00Z"},
              "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
              "status": {"conditions": [{"type": "ResourceReady", "status": "True"},
                                        {"type": "InferenceReady", "status": "True"},
                                        {"type": "WorkspaceSucceeded", "status": "True"},
                                        {"type": "WorkspaceReady", "status": "True"}]}},
             {"metadata": {"name": "tune", "creationTimestamp": "2025-12-29T12:00:00Z"}}]
    lines = controller_cli.workspace_table(items, now).splitlines()
    assert lines[0].split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
                                "WORKSPACESUCCEEDED", "WORKSPACEREADY", "AGE"]
    assert lines[1].split() == ["workspace-phi-3", "Standard_NC24ads_A100_v4", "True", "True", "True", "True", "5m"]
    assert lines[2].split() == ["tune", "3d"]
    assert controller_cli._age("2026-01-01T11:59:15Z", now) == "45s"
    assert controller_cli._age("2026-01-01T07:00:00Z", now) == "5h"


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    from tests.controller.fake_apiserver import FakeKubeAPI

    with FakeKubeAPI() as api:
        config = tmp_path / "kubeconfig"
        config.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(config))
        kube.reset()
        yield api
        kube.reset()


def test_apply_then_get(fake_cluster, tmp_path, capsys):
    assert main(["apply", "-f", str(TINY)]) == 0
    assert capsys.readouterr().out.strip() == "workspace.kaito.sh/workspace-tiny-llama created"
    assert main(["apply", "-f", str(TINY)]) == 0
    assert capsys.readouterr().out.strip() == "workspace.kaito.sh/workspace-tiny-llama configured"
    stored = fake_cluster.get("kaito.sh", "workspaces", "default", "workspace-tiny-llama")
    assert stored["inference"]["preset"]["name"] == "tiny-llama"
    # Re-applying a file without an adapter removes it (a merge patch would have kept it).
    with_adapter = yaml.safe_load(TINY.read_text())
    with_adapter["inference"]["adapters"] = [{"source": {"name": "a", "image": "r.example.com/a:1"}}]
    edited = tmp_path / "with-adapter.yaml"
    edited.write_text(yaml.safe_dump(with_adapter))
    assert main(["apply", "-f", str(edited)]) == 0
    assert fake_cluster.get("kaito.sh", "workspaces", "default", "workspace-tiny-llama")["inference"]["adapters"]
    assert main(["apply", "-f", str(TINY)]) == 0
    assert "adapters" not in fake_cluster.get("kaito.sh", "workspaces", "default", "workspace-tiny-llama")["inference"]
    capsys.readouterr()
    fake_cluster.write_status("kaito.sh", "workspaces", "default", "workspace-tiny-llama", {"conditions": [
        {"type": "ResourceReady", "status": "True"}, {"type": "InferenceReady", "status": "False"}]})
    assert main(["get", "workspace"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["workspace-tiny-llama", "True", "False"]  # no instance type: BYO nodes
    assert main(["get", "workspace", "workspace-tiny-llama"]) == 0
    assert "workspace-tiny-llama" in capsys.readouterr().out
    assert main(["get", "wk", "nope"]) == 1
    assert 'workspaces.kaito.sh "nope" not found' in capsys.readouterr().err


def test_apply_refuses_an_invalid_workspace_before_the_cluster(fake_cluster, tmp_path, capsys):
    bad = yaml.safe_load(TINY.read_text())
    bad["inference"]["adapters"] = [{"source": {"name": "UPPER", "image": "r.example.com/a:1"}}]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["apply", "-f", str(path)]) == 2
    assert "inference.adapters[0].source.name" in capsys.readouterr().err
    assert fake_cluster.objects("kaito.sh", "workspaces") == []


PUSH_SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ACR_REGISTRY_SECRET_HERE"},
               "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": '{"auths": {}}'}}


def test_run_local_dry_run_prints_the_pod_commands(tmp_path, capsys):
    """The process engine runs the rendered containers' own commands, with /mnt paths mapped to a work folder."""
    assert main(["run", "-f", str(TINY), "--local", "--engine", "process", "--dry-run", "--port", "5055"]) == 0
    err = capsys.readouterr().err
    assert "-m runtime.cli serve tiny-llama --port 5055" in err and "--runtime transformers" in err
    assert "/volumes/config-volume/inference_config.yaml" in err and "/mnt/" not in err
    secret = tmp_path / "secret.yaml"
    secret.write_text(yaml.safe_dump(PUSH_SECRET))
    assert main(["run", "-f", str(TUNING), "-f", str(secret), "--local", "--engine", "process", "--dry-run"]) == 0
    steps = [line for line in capsys.readouterr().err.splitlines() if line.startswith("+ ")]
    assert " -m runtime.cli data fetch --to " in steps[0] and "train-00000-of-00001" in steps[0]
    assert "?download=true" not in steps[0]  # printed without the query: it may hold a SAS token
    assert " tune --preset phi-3-mini-128k-instruct --method qlora " in steps[1]
    assert " adapter push --wait-for " in steps[2] and " ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1 " in steps[2]


def test_run_local_with_an_engine_dry_run(capsys):
    assert main(["run", "-f", str(TINY), "--local", "--engine", "podman", "--dry-run", "--port", "5077"]) == 0
    played = list(yaml.safe_load_all(capsys.readouterr().out))  # what podman kube play gets: the rendered pod
    assert [d["kind"] for d in played] == ["Pod"]
    pod = played[0]
    server = pod["spec"]["containers"][0]
    assert server["image"] == "mcr.microsoft.com/aks/kaito/kaito-tiny-llama:0.1.0"
    # the cluster's command, on 127.0.0.1:5077 of this machine's network
    assert server["command"][:5] == ["kaito", "serve", "tiny-llama", "--port", "5077"]
    assert {"name": "KAITO_HOST", "value": "127.0.0.1"} in server["env"] and pod["spec"]["hostNetwork"] is True
    assert "livenessProbe" not in server and "affinity" not in pod["spec"]
    config = next(v for v in pod["spec"]["volumes"] if v["name"] == "config-volume")  # the ConfigMap, as files
    assert config["hostPath"]["path"].endswith("/volumes/config-volume")
    assert main(["run", "-f", str(TINY), "--local", "--engine", "podman", "--dry-run", "--image", "local/tiny:dev"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out))[-1]["spec"]["containers"][0]["image"] == "local/tiny:dev"
    phi = EXAMPLES / "inference" / "kaito_workspace_phi_4_mini.yaml"
    assert main(["run", "-f", str(phi), "--local", "--engine", "docker", "--dry-run", "--image", "local/phi:dev"]) == 0
    err = capsys.readouterr().err  # docker runs each rendered container: its image, command, mounts, GPUs
    assert "+ docker run --rm --name workspace-phi-4-mini-workspace-phi-4-mini --network host " in err
    assert "/volumes/config-volume:/mnt/config " in err
    assert "--gpus all --entrypoint kaito local/phi:dev serve phi-4-mini-instruct --port 5000" in err


@pytest.mark.slow
def test_run_local_serves_the_tiny_model(tiny_model_dir, tmp_path):
    """`kaito run --local --engine process` starts the rendered server here: it says when it is ready, and SIGTERM
    stops the server with it and removes its work folder."""
    import re
    import time

    from tests.support import free_port

    port = free_port()
    log_path = tmp_path / "run.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", "-f", str(TINY), "--local", "--engine",
                             "process", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while f"ready: http://127.0.0.1:{port}" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    output = log_path.read_text()
    assert "serve tiny-llama" in output
    workdir = re.search(r"--adapters-dir (\S+)/volumes/adapter-volume", output)[1]
    assert not Path(workdir).exists()


def deploy_docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if d]


@pytest.mark.parametrize("name", ["crd-workspace.yaml", "rbac.yaml", "controller.yaml"])
def test_deploy_manifests_are_strictly_valid(name):
    for doc in deploy_docs(name):
        validate_strict(doc)


def test_crd_serves_both_versions_and_accepts_every_example():
    (crd,) = deploy_docs("crd-workspace.yaml")
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"} and versions["v1beta1"]["storage"] is True
    columns = [c["name"] for c in versions["v1beta1"]["additionalPrinterColumns"]]
    assert columns == ["Instance", "ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded",
                       "WorkspaceReady", "State", "Age"]
    schema = versions["v1beta1"]["schema"]["openAPIV3Schema"]
    for _, workspace in workspace_examples():
        jsonschema.validate(workspace, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "resource": {"count": 0,
                             "labelSelector": {}}}, schema)


@pytest.mark.slow
def test_kaito_controller_command_reconciles(fake_cluster, tmp_path):
    """`kaito controller` as a process: kopf logs in from $KUBECONFIG on its own and reconciles a Workspace."""
    import time

    log_path = tmp_path / "controller.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "controller"], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert main(["apply", "-f", str(TINY)]) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                fake_cluster.get("apps", "deployments", "default", "workspace-tiny-llama")
                and (fake_cluster.get("kaito.sh", "workspaces", "default", "workspace-tiny-llama") or {}).get("status")):
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        ws = fake_cluster.get("kaito.sh", "workspaces", "default", "workspace-tiny-llama")
        assert ws["status"]["state"] == "Pending", log_path.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_run_local_tunes_and_its_log_feeds_the_progress(tiny_model_dir, tmp_path):
    """A tuning Workspace run locally with the real trainer; its stdout is what the operator parses for progress."""
    import json

    from runtime.controller import status

    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    row = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                        {"role": "assistant", "content": "The capital of France is Paris."}]}
    (data / "train.jsonl").write_text("\n".join(json.dumps(row) for _ in range(4)) + "\n")
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune-tiny"},
          "resource": {"labelSelector": {"matchLabels": {"apps": "tiny"}}},
          "tuning": {"preset": {"name": "tiny-llama"}, "method": "lora",
                     "input": {"volumeSource": {"hostPath": {"path": str(data)}}},
                     "output": {"volumeSource": {"hostPath": {"path": str(out)}}}}}
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(ws))
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", "run", "-f", str(path), "--local", "--engine",
                           "process"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists() and (out / "fine_tuning_completed.txt").exists()
    progress = status.training_progress(proc.stdout)
    assert progress["total"] > 0 and progress["step"] == progress["total"] and progress["percent"] == 100.0


def test_run_local_refuses_what_it_cannot_reproduce(tmp_path, capsys):
    ws = yaml.safe_load((EXAMPLES / "fine-tuning" / "kaito_workspace_tuning_phi_3_with_pvc_volume.yaml").read_text())
    path = tmp_path / "pvc.yaml"
    path.write_text(yaml.safe_dump(ws))
    assert main(["run", "-f", str(path), "--local", "--engine", "process", "--dry-run"]) == 2
    assert "volume data-volume: persistentVolumeClaim volumes are played only with --engine podman" in \
        capsys.readouterr().err
    ws["tuning"]["input"] = {"image": "r.example.com/data:1"}
    ws["tuning"]["output"] = {"volumeSource": {"hostPath": {"path": str(tmp_path / "out")}}}
    path.write_text(yaml.safe_dump(ws))
    assert main(["run", "-f", str(path), "--local", "--engine", "process", "--dry-run"]) == 2
    assert "container data-puller runs /bin/sh -c 'cp -r /data/. /mnt/data/' in r.example.com/data:1" in \
        capsys.readouterr().err
