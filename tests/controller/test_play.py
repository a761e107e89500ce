"""The pod `kaito run --local --engine podman` plays (runtime.controller.play.local_pod): ConfigMap and Secret
volumes and variables filled from the rendered manifests and the `-f` files, as the kubelet fills them. The e2e
tier plays such pods for real (tests/e2e/test_local_run.py)."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

import presets
from runtime.command import CommandError
from runtime.controller import play, render, spec
from tests.controller.test_cli import EXAMPLES

TINY = EXAMPLES / "local" / "kaito_workspace_tiny_llama.yaml"


def rendered(adapter_secret: str | None = "registry-creds", model_secret: str | None = None) -> list[dict]:
    workspace = yaml.safe_load(TINY.read_text())
    workspace["metadata"]["namespace"] = "default"
    source = {"name": "france", "image": "127.0.0.1:5000/adapters/france:v1"}
    if adapter_secret:
        source["imagePullSecrets"] = [adapter_secret]
    workspace["inference"]["adapters"] = [{"source": source}]
    if model_secret:
        workspace["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": model_secret}
    resolved = spec.resolve(workspace)
    return render.render(resolved.workspace, presets.get("tiny-llama"), resolved.fit, render.RenderSettings())


def docker_secret(name: str, config: dict) -> dict:
    data = base64.b64encode(json.dumps(config).encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": data}}


def test_a_pull_secret_becomes_the_file_its_items_name(tmp_path):
    config = {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"kaito:s3cret").decode()}}}
    local = play.local_pod(rendered(), 5077, objects=[docker_secret("registry-creds", config)], root=tmp_path)
    volume = next(v for v in local.pod["spec"]["volumes"] if v["name"] == "docker-config-france")
    assert volume == {"name": "docker-config-france",
                      "hostPath": {"path": str(tmp_path / "docker-config-france"), "type": "Directory"}}
    local.write()
    written = tmp_path / "docker-config-france" / "config.json"  # the item's path, not the key .dockerconfigjson
    assert json.loads(written.read_text()) == config and written.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in (tmp_path / "config-volume").iterdir()] == [render.INFERENCE_CONFIG_KEY]
    puller = local.pod["spec"]["initContainers"][0]
    assert puller["command"][:3] == ["kaito", "adapter", "pull"]  # the rendered command, untouched
    assert "imagePullSecrets" not in local.pod["spec"] and local.pod["spec"]["restartPolicy"] == "OnFailure"


def test_a_missing_secret_is_named_with_what_to_do(tmp_path):
    with pytest.raises(CommandError, match='Secret "registry-creds" \\(volume docker-config-france\\) is not among '
                                           "the files given with -f"):
        play.local_pod(rendered(), 5077, root=tmp_path)
    broken = docker_secret("registry-creds", {})
    broken["data"] = {"other": "e30="}
    with pytest.raises(CommandError, match="Secret \"registry-creds\" has no key '.dockerconfigjson'"):
        play.local_pod(rendered(), 5077, objects=[broken], root=tmp_path)
    broken["data"] = {".dockerconfigjson": "not base64!"}
    with pytest.raises(CommandError, match="data..dockerconfigjson is not base64"):
        play.local_pod(rendered(), 5077, objects=[broken], root=tmp_path)


def test_secret_variables_are_filled_and_hidden_in_a_dry_run(tmp_path):
    token = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"HF_TOKEN": "hf_abc"}}
    manifests = rendered(adapter_secret=None, model_secret="hf")

    def hf_token(**kwargs):
        server = play.local_pod(manifests, 5077, root=tmp_path, **kwargs).pod["spec"]["containers"][0]
        return [v for v in server.get("env", []) if v["name"] == "HF_TOKEN"]

    assert hf_token(objects=[token]) == [{"name": "HF_TOKEN", "value": "hf_abc"}]
    assert hf_token(objects=[token], reveal=False) == [{"name": "HF_TOKEN", "value": "<Secret hf, key HF_TOKEN>"}]
    assert hf_token() == []  # optional in the render: left out when the Secret is absent, as the kubelet does


def test_a_configmap_given_with_f_wins_over_the_rendered_one(tmp_path):
    manifests = rendered(adapter_secret=None)
    name = next(m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap")
    mine = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {render.INFERENCE_CONFIG_KEY: "max_probe_steps: 3\n"}}
    play.local_pod(manifests, 5077, objects=[mine], root=tmp_path).write()
    assert (tmp_path / "config-volume" / render.INFERENCE_CONFIG_KEY).read_text() == "max_probe_steps: 3\n"


def test_kaito_run_takes_f_several_times(tmp_path, capsys):
    from runtime.cli import main

    workspace = yaml.safe_load(TINY.read_text())
    workspace["inference"]["adapters"] = [{"source": {"name": "france", "image": "127.0.0.1:5000/a:v1",
                                                      "imagePullSecrets": ["registry-creds"]}}]
    (tmp_path / "ws.yaml").write_text(yaml.safe_dump(workspace))
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra"}}
    (tmp_path / "more.yaml").write_text(yaml.safe_dump_all([docker_secret("registry-creds", {"auths": {}}), service]))
    args = ["run", "-f", str(tmp_path / "ws.yaml"), "-f", str(tmp_path / "more.yaml"), "--local", "--dry-run"]
    assert main([*args, "--engine", "podman"]) == 0
    out, err = capsys.readouterr()
    assert "docker-config-france" in out and "a Service among the -f files is not used" in err
    assert main([*args, "--engine", "process"]) == 0  # the process engine reads the same pod
    assert "/volumes/docker-config-france" not in capsys.readouterr().err  # (a variable, not an argument)
    assert main(["run", "-f", str(tmp_path / "ws.yaml"), "--local", "--dry-run", "--engine", "podman"]) == 2
    assert 'Secret "registry-creds"' in capsys.readouterr().err


def test_detach_and_build_go_with_podman(capsys):
    from runtime.cli import main

    for flag in ("--detach", "--build"):
        assert main(["run", "-f", str(TINY), "--local", "--engine", "process", flag, "--dry-run"]) == 2
        assert f"{flag} goes with --engine podman" in capsys.readouterr().err
    assert main(["run", "-f", str(TINY), "--local", "--engine", "podman", "--build", "--image", "local/x:1",
                 "--dry-run"]) == 2
    assert "--build builds the preset image the pod names; --image names another" in capsys.readouterr().err


def test_pull_secrets_become_one_docker_config(tmp_path):
    workspace = yaml.safe_load(TINY.read_text())
    workspace["metadata"]["namespace"] = "default"
    workspace["inference"]["preset"]["presetOptions"] = {"imagePullSecrets": ["a", "missing", "b"]}
    resolved = spec.resolve(workspace)
    manifests = render.render(resolved.workspace, presets.get("tiny-llama"), resolved.fit, render.RenderSettings())
    a = docker_secret("a", {"auths": {"r1.example.com": {"auth": "dTpw"}}})
    b = docker_secret("b", {"auths": {"r2.example.com": {"auth": "dTpx"}}})
    local = play.local_pod(manifests, 5077, objects=[a, b], root=tmp_path)
    assert local.pull_auth == {"auths": {"r1.example.com": {"auth": "dTpw"}, "r2.example.com": {"auth": "dTpx"}}}
    assert "imagePullSecrets" not in local.pod["spec"]  # podman is not given them: kaito run pulls with them
    assert play.local_pod(manifests, 5077, root=tmp_path).pull_auth is None  # none given: pull without
    b["data"] = {".dockerconfigjson": "bm90IGpzb24="}  # "not json"
    with pytest.raises(CommandError, match='Secret "b" \\(imagePullSecrets\\): not a docker config'):
        play.local_pod(manifests, 5077, objects=[a, b], root=tmp_path)


def test_a_tuning_jobs_pod_keeps_its_restart_policy_and_results_folder(tmp_path):
    workspace = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                 "metadata": {"name": "tune-tiny", "namespace": "default"},
                 "resource": {"labelSelector": {"matchLabels": {"apps": "tune-tiny"}}},
                 "tuning": {"preset": {"name": "tiny-llama"}, "method": "qlora",
                            "input": {"urls": ["http://127.0.0.1:8000/train.parquet?download=true"]},
                            "output": {"image": "127.0.0.1:5000/adapters/tiny:1", "imagePushSecret": "push"}}}
    resolved = spec.resolve(workspace)
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit, render.RenderSettings())
    local = play.local_pod(manifests, 5077, objects=[docker_secret("push", {"auths": {}})], root=tmp_path)
    assert local.port is None and local.backoff_limit == render.TUNING_BACKOFF_LIMIT  # a Job: awaited to its end
    assert local.pod["spec"]["restartPolicy"] == "OnFailure"  # as rendered: a killed trainer restarts and resumes
    assert local.results == tmp_path / "results-volume" and local.results in local.empty_dirs
    local.write()
    assert local.results.stat().st_mode & 0o777 == 0o777  # an emptyDir is world-writable; the images run as non-root
    trainer = next(c for c in local.pod["spec"]["containers"] if c["name"] == render.TRAINER_CONTAINER)
    assert trainer["command"][:2] == ["kaito", "tune"] and "KAITO_HOST" not in str(trainer.get("env"))


def test_the_trainers_events_read_as_progress():
    shown = [play._training_event(e) for e in [
        {"event": "train_begin", "step": 0, "total": 80}, {"event": "log", "step": 10, "loss": 1.23456},
        {"event": "checkpoint", "step": 50}, {"event": "resume", "checkpoint": "/mnt/results/checkpoints/checkpoint-50"},
        {"event": "completed", "step": 80}, {"event": "data", "rows": 80}]]
    assert shown == ["training, step 0 of 80", "step 10, loss 1.2346", "checkpoint at step 50",
                     "resuming from checkpoint-50", "completed at step 80", None]


def test_a_containers_result_is_its_last_stdout_line_even_after_a_partial_stderr_record():
    # What CI saw in the pusher's log: its log line cut as partial, then its result on stdout. `podman logs`
    # printed the two as one line; the stream of each record keeps them apart.
    records = [
        "2026-12-05T17:31:03.427+00:00 stderr P 2026-12-05 17:31:03,427 INFO runtime.adapters.oci: pushed r/a:1@sha256:df",
        "2026-12-05T17:31:03.428+00:00 stdout P r/a:1@sha256:",
        "2026-12-05T17:31:03.428+00:00 stdout F df4a",
        "2026-12-05T17:31:03.429+00:00 stderr F ",
    ]
    assert play.stdout_lines(records) == ["r/a:1@sha256:df4a"]
    assert play.stdout_lines(["2026-12-05T17:31:03.428+00:00 stdout F "]) == [""]
