"""Rendering: golden files for every preset and every example, `kubernetes-validate --strict` on every output.

Golden files live in tests/controller/golden/ and were read by a human once. After an intended change, rewrite
them with `KAITO_UPDATE_GOLDEN=1 pytest tests/controller/test_render.py` and review the diff.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import presets
from runtime.controller import render, spec
from tests.controller.examples import workspace_examples
from tests.controller.strict import validate_strict

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
EXAMPLES = ROOT / "examples"
UPDATE = os.environ.get("KAITO_UPDATE_GOLDEN") == "1"
UID = "00000000-0000-4000-8000-000000000001"
SETTINGS = render.RenderSettings()  # the default registry, whatever the environment says


def workspace(name: str, section: dict, instance_type: str | None, count: int = 1, api="kaito.sh/v1beta1") -> dict:
    resource: dict = {"labelSelector": {"matchLabels": {"apps": name}}}
    if instance_type:
        resource["instanceType"] = instance_type
    if count != 1:
        resource["count"] = count
    return {"apiVersion": api, "kind": "Workspace", "metadata": {"name": name, "namespace": "default", "uid": UID},
            **{"resource": resource}, **section}


def fitting_instance(preset, method: str | None = None) -> tuple[str | None, int]:
    """An instance type (and node count) the sizing plan accepts for this preset; None for CPU-local presets."""
    if preset.is_local:
        return None, 1
    from runtime.sizing import catalog, plan

    candidates = [("Standard_NC24ads_A100_v4", 1)]
    for name, count in candidates + [("Standard_ND96isr_H200_v5", 1), ("Standard_ND96isr_H200_v5", 2),
                                     ("Standard_ND96isr_H200_v5", 4)]:
        it = catalog.get_instance_type(name)
        try:
            if method:
                plan.plan_tuning(preset, it, method)
            else:
                plan.plan_inference(preset, it, count=count)
            return name, count
        except plan.DoesNotFit as err:
            if err.suggestion and count == 1:
                return err.suggestion, 1
    raise AssertionError(f"no instance type fits {preset.name}")


def preset_cases() -> dict[str, dict]:
    cases = {}
    for preset in presets.all_presets():
        instance, count = fitting_instance(preset)
        cases[f"preset-{preset.name}-inference"] = workspace(
            f"ws-{preset.name.replace('.', '-')}", {"inference": {"preset": {"name": preset.name}}}, instance, count)
        if preset.tuning is not None:
            method = preset.tuning.methods[0]
            instance, _ = fitting_instance(preset, method)
            cases[f"preset-{preset.name}-tuning"] = workspace(
                f"tune-{preset.name.replace('.', '-')}",
                {"tuning": {"preset": {"name": preset.name}, "method": method,
                            "input": {"urls": ["https://example.com/data/train.parquet"]},
                            "output": {"image": "registry.example.com/adapters/x:0.0.1", "imagePushSecret": "push"}}},
                instance)
    return cases


def example_cases() -> dict[str, dict]:
    cases = {}
    for path, obj in workspace_examples():
        section = obj.get("tuning") or obj.get("inference")
        if section["preset"]["name"] in presets.names():
            obj["metadata"].update(uid=UID, namespace="default")
            cases[f"example-{path.stem.replace('_', '-').replace('.', '-')}"] = obj
    return cases


CASES = {**preset_cases(), **example_cases()}


def rendered(obj: dict, settings: render.RenderSettings = SETTINGS) -> list[dict]:
    resolved = spec.resolve(copy.deepcopy(obj))
    return render.render(resolved.workspace, resolved.preset, resolved.fit, settings)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_and_strict(case):
    manifests = rendered(CASES[case])
    validate_strict(manifests)
    text = render.to_yaml(manifests)
    path = GOLDEN / f"{case}.yaml"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run KAITO_UPDATE_GOLDEN=1 pytest {__file__} and review it"
    assert text == path.read_text(), f"{case} differs from {path.name} (KAITO_UPDATE_GOLDEN=1 rewrites it)"


def test_every_golden_file_has_a_case():
    stale = sorted(p.stem for p in GOLDEN.glob("*.yaml") if p.stem not in CASES)
    if UPDATE:
        for name in stale:
            (GOLDEN / f"{name}.yaml").unlink()
        stale = []
    assert not stale, f"golden files without a case (preset or example removed?): {stale}"


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def test_inference_deployment_contract():
    obj = workspace("phi", {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}, "Standard_NC24ads_A100_v4")
    obj["inference"]["adapters"] = [{"source": {"name": "adapter-a", "image": "r.example.com/a:1",
                                                "imagePullSecrets": ["pull-a"]}, "strength": "1.0"}]
    objs = by_kind(rendered(obj))
    preset = presets.get("phi-3-mini-4k-instruct")
    svc = objs["Service/phi"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]
    assert svc["spec"]["selector"] == {spec.LABEL_WORKSPACE: "phi"}
    deploy = objs["Deployment/phi"]
    assert deploy["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "phi", "uid": UID, "controller": True,
        "blockOwnerDeletion": True}
    pod = deploy["spec"]["template"]["spec"]
    main = pod["containers"][0]
    assert main["image"] == f"mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct:{preset.image_tag}"
    assert main["command"][:3] == ["kaito", "serve", "phi-3-mini-4k-instruct"]
    assert main["command"][3:] == ["--port", "5000", "--adapters-dir", "/mnt/adapter", "--runtime", "vllm",
                                   "--config", "/mnt/config/inference_config.yaml"]
    # Start-up and readiness ask whether the engine takes work; liveness whether the process and engine are alive.
    assert main["startupProbe"]["httpGet"] == {"path": "/v1/health/ready", "port": 5000}
    assert main["readinessProbe"]["httpGet"] == {"path": "/v1/health/ready", "port": 5000}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v1/health/live", "port": 5000}
    assert main["startupProbe"]["failureThreshold"] * main["startupProbe"]["periodSeconds"] >= preset.readiness_timeout_s
    assert main["startupProbe"]["failureThreshold"] == math.ceil(preset.readiness_timeout_s / 10)
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [
        {"key": "apps", "operator": "In", "values": ["phi"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC24ads_A100_v4"]}]
    init = pod["initContainers"][0]
    assert init["command"] == ["kaito", "adapter", "pull", "r.example.com/a:1", "--to", "/mnt/adapter/adapter-a"]
    assert {"name": "adapter-a", "value": "1.0"} in main["env"]
    assert {"name": "docker-config-adapter-a", "secret": {"secretName": "pull-a", "items": [
        {"key": ".dockerconfigjson", "path": "config.json"}]}} in pod["volumes"]
    config = yaml.safe_load(objs["ConfigMap/phi-inference-params"]["data"]["inference_config.yaml"])
    assert config["vllm"]["max-model-len"] > 0 and config["vllm"]["gpu-memory-utilization"] == 0.84
    for m in objs.values():
        assert m["metadata"]["labels"][spec.LABEL_WORKSPACE] == "phi"


def test_a_malformed_registry_is_refused_when_the_settings_are_read():
    from runtime.images.naming import ImageNameError

    with pytest.raises(ImageNameError, match="PRESET_REGISTRY_NAME"):
        render.RenderSettings.from_env({"PRESET_REGISTRY_NAME": "My ACR/kaito"})


def test_user_config_map_and_registry_override():
    obj = workspace("own", {"inference": {"preset": {"name": "phi-3-mini-4k-instruct"}, "config": "my-config"}},
                    "Standard_NC24ads_A100_v4")
    settings = render.RenderSettings.from_env({"PRESET_REGISTRY_NAME": "myacr.azurecr.io/kaito"})
    objs = by_kind(rendered(obj, settings))
    assert "ConfigMap/own-inference-params" not in objs
    pod = objs["Deployment/own"]["spec"]["template"]["spec"]
    assert {"name": "config-volume", "configMap": {"name": "my-config"}} in pod["volumes"]
    assert pod["containers"][0]["image"].startswith("myacr.azurecr.io/kaito/kaito-phi-3-mini-4k-instruct:")


def test_multinode_plan_gives_statefulset_and_headless_service():
    base = presets.get("phi-3-mini-4k-instruct")
    preset = dataclasses.replace(base, distributed=True)
    ws = spec.parse_workspace(workspace("big", {"inference": {"preset": {"name": base.name}}},
                                        "Standard_NC80adis_H100_v5", count=2))
    plan = SimpleNamespace(nodes=2, gpus_per_node=2, tensor_parallel_size=2, pipeline_parallel_size=2,
                           gpu_memory_utilization=0.84, max_model_len=4096, dtype="bfloat16")
    manifests = render.render(ws, preset, spec.FitReport(plan=plan), SETTINGS)
    validate_strict(manifests)
    objs = by_kind(manifests)
    sts = objs["StatefulSet/big"]
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["serviceName"] == "big-headless"
    assert objs["Service/big-headless"]["spec"]["clusterIP"] == "None"
    assert objs["Service/big"]["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "big-0"
    main = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["LEADER_ADDRESS"]["value"] == "big-0.big-headless.default.svc.cluster.local"
    assert main["command"][:2] == ["/bin/sh", "-c"] and "POD_INDEX" in main["command"][2]
    assert "big-0.big-headless.default.svc.cluster.local" in main["command"][2]
    assert main["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert "Deployment/big" not in objs


def tuning_ws(**section) -> dict:
    base = {"preset": {"name": "phi-3-mini-128k-instruct"}, "method": "qlora",
            "input": {"urls": ["https://example.com/d/train.parquet?download=true"]},
            "output": {"image": "r.example.com/out:1", "imagePushSecret": "push"}}
    return workspace("tune", {"tuning": {**base, **section}}, "Standard_NC24ads_A100_v4")


def test_tuning_job_with_urls_and_pusher():
    objs = by_kind(rendered(tuning_ws()))
    job = objs["Job/tune"]
    pod = job["spec"]["template"]["spec"]
    # A crashed trainer restarts in the same pod and resumes from the checkpoints in its emptyDir.
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] > 0
    init = pod["initContainers"][0]
    assert init["name"] == "data-downloader"
    trainer, pusher = pod["containers"]
    assert init["image"] == trainer["image"]  # our fetcher, in the preset image
    assert init["command"] == ["kaito", "data", "fetch", "--to", "/mnt/data",
                               "https://example.com/d/train.parquet?download=true"]
    assert trainer["command"] == ["kaito", "tune", "--preset", "phi-3-mini-128k-instruct", "--method", "qlora",
                                  "--config", "/mnt/config/training_config.yaml", "--data", "/mnt/data",
                                  "--output-dir", "/mnt/results"]
    assert pusher["command"] == ["kaito", "adapter", "push", "--wait-for", "/mnt/results", "r.example.com/out:1",
                                 "--preset", "phi-3-mini-128k-instruct", "--revision",
                                 presets.get("phi-3-mini-128k-instruct").revision, "--method", "qlora"]
    # The image runs as a non-root user: credentials are found through DOCKER_CONFIG, not /root/.docker.
    assert {"name": "push-secret", "mountPath": "/etc/kaito/docker-config/push-secret",
            "readOnly": True} in pusher["volumeMounts"]
    assert {"name": "DOCKER_CONFIG", "value": "/etc/kaito/docker-config/push-secret"} in pusher["env"]
    assert {"name": "push"} in pod["imagePullSecrets"]
    config = yaml.safe_load(objs["ConfigMap/tune-qlora-params"]["data"]["training_config.yaml"])["training_config"]
    assert config["QuantizationConfig"]["load_in_4bit"] is True
    assert config["QuantizationConfig"]["bnb_4bit_quant_type"] == "nf4"
    assert config["LoraConfig"]["r"] == 8 and config["TrainingArguments"]["output_dir"] == "/mnt/results"
    assert config["LoraConfig"]["target_modules"] == list(presets.get("phi-3-mini-128k-instruct").tuning.target_modules)


def test_tuning_lora_defaults_and_volumes():
    pvc_in = {"persistentVolumeClaim": {"claimName": "in"}}
    pvc_out = {"persistentVolumeClaim": {"claimName": "out"}}
    manifests = rendered(tuning_ws(method="lora", input={"volumeSource": pvc_in}, output={"volumeSource": pvc_out}))
    validate_strict(manifests)
    objs = by_kind(manifests)
    config = yaml.safe_load(objs["ConfigMap/tune-lora-params"]["data"]["training_config.yaml"])["training_config"]
    assert config["QuantizationConfig"] == {"load_in_4bit": False}
    pod = objs["Job/tune"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod and len(pod["containers"]) == 1  # no download, no pusher
    assert {"name": "data-volume", **pvc_in} in pod["volumes"]
    assert {"name": "results-volume", **pvc_out} in pod["volumes"]


def test_tuning_image_input_and_user_config():
    manifests = rendered(tuning_ws(config="my-training", input={"image": "r.example.com/data:1",
                                                                "imagePullSecrets": ["data-pull"]}))
    validate_strict(manifests)
    objs = by_kind(manifests)
    assert not [k for k in objs if k.startswith("ConfigMap/")]
    pod = objs["Job/tune"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "r.example.com/data:1"
    assert {"name": "data-pull"} in pod["imagePullSecrets"]
    assert {"name": "config-volume", "configMap": {"name": "my-training"}} in pod["volumes"]


def test_template_workspace_keeps_the_users_pod():
    template = {"spec": {"containers": [{"name": "custom", "image": "r.example.com/server:1",
                                         "ports": [{"containerPort": 5000}]}]}}
    manifests = rendered(workspace("custom", {"inference": {"template": template}}, None))
    validate_strict(manifests)
    objs = by_kind(manifests)
    pod = objs["Deployment/custom"]["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "r.example.com/server:1"
    assert pod["metadata"]["labels"][spec.LABEL_WORKSPACE] == "custom"


def test_rendering_is_pure_and_stable():
    obj = CASES["preset-tiny-llama-inference"]
    assert render.to_yaml(rendered(obj)) == render.to_yaml(rendered(obj))
    without_uid = copy.deepcopy(obj)
    del without_uid["metadata"]["uid"]
    assert all("ownerReferences" not in m["metadata"] for m in rendered(without_uid))


def test_local_preset_requests_no_gpu():
    pod = by_kind(rendered(CASES["preset-tiny-llama-inference"]))["Deployment/ws-tiny-llama"]["spec"]["template"]["spec"]
    assert "resources" not in pod["containers"][0] and "tolerations" not in pod


def test_strict_validation_catches_a_misspelt_field():
    manifests = rendered(CASES["preset-tiny-llama-inference"])
    deploy = next(m for m in manifests if m["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/health", "port": 5000}}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate_strict(deploy)


def test_gated_preset_downloads_weights_into_a_sized_volume():
    """Gated weights are not in a public image: the pod downloads them into an emptyDir sized from the preset."""
    gated = by_kind(rendered(workspace("llama", {"inference": {"preset": {"name": "llama-3.1-8b-instruct"}}},
                                       "Standard_NC24ads_A100_v4")))
    pod = gated["Deployment/llama"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-weights-volume")
    assert volume["emptyDir"]["sizeLimit"] == "27Gi"  # 14.96 GiB x 1.1, rounded up, + 10
    main = pod["containers"][0]
    assert {"name": "HF_HOME", "value": "/workspace/cache/huggingface"} in main["env"]
    assert {"name": "model-weights-volume", "mountPath": "/workspace/cache"} in main["volumeMounts"]
    public = by_kind(rendered(workspace("phi", {"inference": {"preset": {"name": "phi-4-mini-instruct"}}},
                                        "Standard_NC24ads_A100_v4")))
    pod = public["Deployment/phi"]["spec"]["template"]["spec"]
    assert all(v["name"] != "model-weights-volume" for v in pod["volumes"])
