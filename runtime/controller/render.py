"""Workspace -> Kubernetes manifests, as pure functions (no cluster, no I/O, no environment reads).

`render(ws, preset, fit, settings)` returns a list of plain manifest dicts in apply order. Inference gives a
ConfigMap (unless the user names one), a Deployment (a StatefulSet plus a headless Service when the sizing
plan needs several nodes) and a Service 80 -> 5000; tuning gives a ConfigMap (Kaito's qlora/lora defaults
unless the user names one) and a Job. Names, volumes and mount paths follow Kaito (kaito-reference.md §3, §5.2).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from runtime.controller.launch import leader_address
from runtime.controller.spec import (
    ANNOTATION_ENABLE_LB,
    KIND,
    LABEL_WORKSPACE,
    FitReport,
    Workspace,
    runtime_of,
)
from runtime.images import naming
from runtime.kaito import (
    ADAPTERS_DIR,
    CONFIG_DIR,
    DATA_DIR,
    INFERENCE_CONFIG_KEY,
    INFERENCE_CONFIG_PATH,
    LIVE_PATH,
    RAY_PORT,
    READY_PATH,
    RESULTS_DIR,
    TRAINING_CONFIG_KEY,
    TRAINING_CONFIG_PATH,
    WEIGHTS_CACHE_DIR,
)
from runtime.kaito import INFERENCE_PORT as PORT
from runtime.kaito import configs as kaito_configs

GPU_RESOURCE = "nvidia.com/gpu"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
SPEC_HASH_ANNOTATION = "kaito.sh/spec-hash"
"""Hash of the rendered manifest: the applier replaces an object only when it changed."""
TRAINER_CONTAINER = "trainer"
"""The tuning Job's training container: status.py reads its log for progress."""
MANAGED_BY = "kaito-runtime"
# Container restarts allowed before a tuning Job fails (Kubernetes' default).
TUNING_BACKOFF_LIMIT = 6


@dataclass(frozen=True)
class RenderSettings:
    """What rendering takes from outside the Workspace (the CLI and the operator fill it from the environment)."""

    registry: str = naming.DEFAULT_REGISTRY
    """Registry of the preset images (env PRESET_REGISTRY_NAME)."""
    default_gpus: int = 1
    """GPUs per pod when no sizing plan says otherwise (bring-your-own nodes)."""

    @classmethod
    def from_env(cls, environ) -> RenderSettings:
        """Settings from an environment mapping (pass os.environ); PRESET_REGISTRY_NAME as in Kaito."""
        return cls(registry=naming.resolve_registry(None, environ))  # checked: a bad value fails here, not in pods


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


def labels(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.name, "app.kubernetes.io/managed-by": MANAGED_BY}


def selector(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.name}


def owner_references(ws: Workspace) -> list[dict[str, Any]]:
    """The Workspace owns every child, so Kubernetes' garbage collector deletes them with it."""
    if not ws.metadata.uid:  # rendering a file: there is no object to own the children yet
        return []
    return [{"apiVersion": ws.api_version, "kind": KIND,
             "name": ws.name, "uid": ws.metadata.uid, "controller": True, "blockOwnerDeletion": True}]


def metadata(ws: Workspace, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ws.namespace, "labels": {**labels(ws), **(extra_labels or {})}}
    owners = owner_references(ws)
    if owners:
        meta["ownerReferences"] = owners
    return meta


def preset_image(preset, settings: RenderSettings, override: str | None = None) -> str:
    """<registry>/kaito-<preset>:<tag>, unless presetOptions.image names another."""
    return override or naming.PresetImage(preset, settings.registry.rstrip("/"), preset.image_tag).reference


def gpus_per_pod(ws: Workspace, preset, fit: FitReport, settings: RenderSettings) -> int:
    if fit.plan is not None:  # InferencePlan.gpus_per_node, TuningPlan.gpus
        planned = getattr(fit.plan, "gpus_per_node", None) or getattr(fit.plan, "gpus", None)
        if planned:
            return int(planned)
    if fit.instance is not None:
        return int(fit.instance.gpu_count)
    if preset.is_local and not ws.instance_type:
        return 0  # local presets run on CPU nodes
    return settings.default_gpus


def node_affinity(ws: Workspace) -> dict[str, Any]:
    """labelSelector (matchLabels as In, matchExpressions as they are) plus the instance type label."""
    expressions = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(ws.resource.label_selector.match_labels.items())]
    for req in ws.resource.label_selector.match_expressions:
        item: dict[str, Any] = {"key": req.key, "operator": req.operator}
        if req.operator in ("In", "NotIn"):
            item["values"] = list(req.values)
        expressions.append(item)
    if ws.instance_type:
        expressions.append({"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [ws.instance_type]})
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": expressions}]}}}


def gpu_tolerations(gpus: int) -> list[dict[str, Any]]:
    if gpus <= 0:
        return []
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]


def gpu_resources(gpus: int) -> dict[str, Any]:
    if gpus <= 0:
        return {}
    return {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}


def dshm_volume() -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory"}}


def weights_download_needed(preset) -> bool:
    """Whether the pod downloads the weights: they are baked into public preset images only when redistributable."""
    return not preset.redistributable and not preset.is_local


def weights_cache_volume(preset) -> dict[str, Any]:
    # Safetensors plus 10% and 10 GiB of headroom (tokenizer, partial downloads).
    size = math.ceil(preset.weights_gib * 1.1) + 10
    return {"name": "model-weights-volume", "emptyDir": {"sizeLimit": f"{size}Gi"}}


def pod_spec(ws: Workspace, containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
             init_containers: list[dict[str, Any]], gpus: int, pull_secrets: list[str], **first: Any
             ) -> dict[str, Any]:
    """A pod spec on the Workspace's nodes: `first` fields, affinity, containers, volumes, then what applies of
    init containers, GPU tolerations and image pull secrets (each secret once)."""
    spec: dict[str, Any] = {**first, "affinity": node_affinity(ws), "containers": containers, "volumes": volumes}
    if init_containers:
        spec["initContainers"] = init_containers
    tolerations = gpu_tolerations(gpus)
    if tolerations:
        spec["tolerations"] = tolerations
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in dict.fromkeys(pull_secrets)]
    return spec


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """Stamp the manifest's own hash into an annotation (the applier compares it to skip no-op updates)."""
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest.setdefault("metadata", {}).setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = \
        hashlib.sha256(body).hexdigest()[:16]
    return manifest


# Registry credentials (a .dockerconfigjson Secret) are mounted here and named by DOCKER_CONFIG: the runtime
# images run as a non-root user, so /root/.docker would never be read.
DOCKER_CONFIG_ROOT = "/etc/kaito/docker-config"


def with_docker_config(container: dict[str, Any], volumes: list[dict[str, Any]], name: str, secret: str) -> None:
    """Give `container` the registry credentials of `secret` (`kaito adapter pull|push` read $DOCKER_CONFIG)."""
    path = f"{DOCKER_CONFIG_ROOT}/{name}"
    volumes.append({"name": name, "secret": {"secretName": secret,
                                             "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path, "readOnly": True})
    container.setdefault("env", []).append({"name": "DOCKER_CONFIG", "value": path})


# ---------------------------------------------------------------------------------------------------------------
# Inference


def is_multinode(ws: Workspace, preset, fit: FitReport) -> bool:
    nodes = int(getattr(fit.plan, "nodes", 1) or 1) if fit.plan is not None else 1
    return nodes > 1 and preset.distributed and runtime_of(ws, preset) == "vllm"


def inference_config_name(ws: Workspace) -> str:
    return ws.inference.config or f"{ws.name}-inference-params"


def default_inference_config(ws: Workspace, preset, fit: FitReport) -> dict[str, Any]:
    """Kaito's inference_config.yaml: wrapper settings plus a `vllm` section of engine flags from the plan.

    For the transformers runtime the file holds server settings only (keys = `kaito serve` flag names).
    """
    if runtime_of(ws, preset) != "vllm":
        plan_len = getattr(fit.plan, "max_model_len", None)
        return {"max-model-len": plan_len} if plan_len else {}
    engine: dict[str, Any] = {"cpu-offload-gb": 0}
    plan = fit.plan
    if plan is not None:
        for key, attr in (("gpu-memory-utilization", "gpu_memory_utilization"), ("max-model-len", "max_model_len"),
                          ("tensor-parallel-size", "tensor_parallel_size"),
                          ("pipeline-parallel-size", "pipeline_parallel_size")):
            value = getattr(plan, attr, None)
            if value is not None and not (key == "pipeline-parallel-size" and value == 1):
                engine[key] = value
    return {**kaito_configs.INFERENCE_DEFAULTS, kaito_configs.INFERENCE_ENGINE_SECTION: engine}


def serve_args(ws: Workspace, preset) -> list[str]:
    return ["kaito", "serve", preset.name, "--port", str(PORT), "--adapters-dir", ADAPTERS_DIR,
            "--runtime", runtime_of(ws, preset), "--config", INFERENCE_CONFIG_PATH]


def multinode_command(ws: Workspace, preset, fit: FitReport) -> list[str]:
    """The one place that builds the multi-node (Ray leader/worker) command: runtime.controller.launch owns
    the exact strings (kaito-reference §1.4); pod 0 runs the Ray head and the server, the others join it."""
    from runtime.controller.launch import multinode_command as vllm_multinode

    return vllm_multinode(preset, fit.plan, ws.name, ws.namespace,
                          config_path=INFERENCE_CONFIG_PATH)


def multinode_env(ws: Workspace) -> list[dict[str, Any]]:
    return [
        {"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
        {"name": "LEADER_ADDRESS", "value": leader_address(ws.name, ws.namespace)},
    ]


def probes(preset, multinode: bool) -> dict[str, Any]:
    """startupProbe waits (the preset's readiness timeout) until the engine is ready; then liveness asks whether the
    process and its engine are alive (a stopped engine restarts the pod) and readiness whether it takes work."""
    if multinode:
        # Only the leader serves HTTP; workers count as healthy while Ray runs them.
        def check(path: str) -> dict[str, Any]:
            return {"exec": {"command": ["/bin/sh", "-c", '[ "${POD_INDEX}" != "0" ] || python3 -c "import urllib.request;'
                                                          f"urllib.request.urlopen('http://127.0.0.1:{PORT}{path}')\""]}}
    else:
        def check(path: str) -> dict[str, Any]:
            return {"httpGet": {"path": path, "port": PORT}}
    return {
        "startupProbe": {**check(READY_PATH), "periodSeconds": 10,
                         "failureThreshold": max(1, math.ceil(preset.readiness_timeout_s / 10))},
        "livenessProbe": {**check(LIVE_PATH), "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**check(READY_PATH), "periodSeconds": 10, "failureThreshold": 1},
    }


def inference_pod_template(ws: Workspace, preset, fit: FitReport, settings: RenderSettings) -> dict[str, Any]:
    inference = ws.inference
    options = inference.preset.preset_options
    image = preset_image(preset, settings, options.image)
    gpus = gpus_per_pod(ws, preset, fit, settings)
    multinode = is_multinode(ws, preset, fit)
    env: list[dict[str, Any]] = [{"name": a.source.name, "value": str(a.strength_value)} for a in inference.adapters]
    if options.model_access_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": options.model_access_secret, "key": "HF_TOKEN", "optional": True}}})
    if multinode:
        env += multinode_env(ws)
    volumes = [dshm_volume(), {"name": "adapter-volume", "emptyDir": {}},
               {"name": "config-volume", "configMap": {"name": inference_config_name(ws)}}]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "adapter-volume", "mountPath": ADAPTERS_DIR},
              {"name": "config-volume", "mountPath": CONFIG_DIR}]
    if weights_download_needed(preset):
        volumes.append(weights_cache_volume(preset))
        mounts.append({"name": "model-weights-volume", "mountPath": WEIGHTS_CACHE_DIR})
        env.append({"name": "HF_HOME", "value": f"{WEIGHTS_CACHE_DIR}/huggingface"})
    init_containers = []
    pull_secrets = list(options.image_pull_secrets)
    for adapter in inference.adapters:
        source = adapter.source
        container: dict[str, Any] = {
            "name": f"puller-{source.name}",
            "image": image,
            "command": ["kaito", "adapter", "pull", source.image, "--to", f"{ADAPTERS_DIR}/{source.name}"],
            "volumeMounts": [{"name": "adapter-volume", "mountPath": ADAPTERS_DIR}],
        }
        if source.image_pull_secrets:
            with_docker_config(container, volumes, f"docker-config-{source.name}", source.image_pull_secrets[0])
        init_containers.append(container)
    main: dict[str, Any] = {
        "name": ws.name,
        "image": image,
        "command": multinode_command(ws, preset, fit) if multinode else serve_args(ws, preset),
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": env,
        "resources": gpu_resources(gpus),
        "volumeMounts": mounts,
        **probes(preset, multinode),
    }
    if multinode:
        main["ports"].append({"name": "ray", "containerPort": RAY_PORT})
    if not env:
        del main["env"]
    if not main["resources"]:
        del main["resources"]
    return {"metadata": {"labels": labels(ws)},
            "spec": pod_spec(ws, [main], volumes, init_containers, gpus, pull_secrets)}


def template_pod(ws: Workspace) -> dict[str, Any]:
    """inference.template: the user's PodTemplateSpec, with our labels so the Service and status find it."""
    template = copy.deepcopy(ws.inference.template)
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels(ws))
    return template


def render_inference(ws: Workspace, preset, fit: FitReport, settings: RenderSettings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if preset is None:  # template workloads: no preset, no sizing
        pod = template_pod(ws)
        multinode = False
    else:
        if not ws.inference.config:
            out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ws, inference_config_name(ws)),
                        "data": {INFERENCE_CONFIG_KEY: yaml.safe_dump(default_inference_config(ws, preset, fit),
                                                                      sort_keys=False)}})
        pod = inference_pod_template(ws, preset, fit, settings)
        multinode = is_multinode(ws, preset, fit)
    service_selector = selector(ws)
    if multinode:
        replicas = int(fit.plan.nodes)
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": metadata(ws, f"{ws.name}-headless"),
                    "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector(ws),
                             "ports": [{"name": "ray", "port": RAY_PORT, "targetPort": RAY_PORT}]}})
        out.append({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(ws, ws.name),
                    "spec": {"replicas": replicas, "serviceName": f"{ws.name}-headless",
                             "podManagementPolicy": "Parallel", "selector": {"matchLabels": selector(ws)},
                             "template": pod}})
        # Only the leader serves the API.
        service_selector = {**selector(ws), "statefulset.kubernetes.io/pod-name": f"{ws.name}-0"}
    else:
        out.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(ws, ws.name),
                    "spec": {"replicas": ws.resource.count, "selector": {"matchLabels": selector(ws)},
                             "template": pod}})
    lb = (ws.annotation(ANNOTATION_ENABLE_LB) or "").lower() == "true"
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": metadata(ws, ws.name),
                "spec": {"type": "LoadBalancer" if lb else "ClusterIP", "selector": service_selector,
                         "ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}]}})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Tuning


def default_training_config(preset, method: str, fit: FitReport) -> dict[str, Any]:
    """The trainer's own defaults for `method` (Kaito's qlora/lora ConfigMaps with checkpoints that resume), with
    the preset's LoRA target modules, the results volume as output_dir, and the sizing plan's dtype (float16
    below compute capability 8.0). Without a plan (no known GPU) the trainer picks the dtype for its device."""
    targets = list(preset.tuning.target_modules) if preset.tuning else []
    return kaito_configs.default_document(method, output_dir=RESULTS_DIR, target_modules=targets,
                                          dtype=getattr(fit.plan, "dtype", None))


def training_config_name(ws: Workspace) -> str:
    return ws.tuning.config or f"{ws.name}-{ws.tuning.method}-params"


def render_tuning(ws: Workspace, preset, fit: FitReport, settings: RenderSettings) -> list[dict[str, Any]]:
    tuning = ws.tuning
    out: list[dict[str, Any]] = []
    if not tuning.config:
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(ws, training_config_name(ws)),
                    "data": {TRAINING_CONFIG_KEY: yaml.safe_dump(default_training_config(preset, tuning.method, fit),
                                                                 sort_keys=False)}})
    image = preset_image(preset, settings, tuning.preset.preset_options.image)
    gpus = gpus_per_pod(ws, preset, fit, settings)
    volumes: list[dict[str, Any]] = [dshm_volume(),
                                     {"name": "config-volume", "configMap": {"name": training_config_name(ws)}}]
    data_mount = {"name": "data-volume", "mountPath": DATA_DIR}
    results_mount = {"name": "results-volume", "mountPath": RESULTS_DIR}
    init_containers: list[dict[str, Any]] = []
    pull_secrets = list(tuning.preset.preset_options.image_pull_secrets)
    source = tuning.input
    if source.volume_source is not None:
        volumes.append({"name": "data-volume", **source.volume_source})
    else:
        volumes.append({"name": "data-volume", "emptyDir": {}})
        if source.urls:
            # Our own image and fetcher (retries, resume, a size limit, no credentials in logs), not a curl image
            # from another registry; files are named by their basename without the query, as Kaito's are.
            init_containers.append({
                "name": "data-downloader", "image": image,
                "command": ["kaito", "data", "fetch", "--to", DATA_DIR, *source.urls],
                "volumeMounts": [data_mount]})
        else:
            # The dataset image holds its files under /data (Kaito's layout); copy them with the image's own shell.
            init_containers.append({
                "name": "data-puller", "image": source.image,
                "command": ["/bin/sh", "-c", f"cp -r /data/. {DATA_DIR}/"],
                "volumeMounts": [data_mount]})
            pull_secrets += source.image_pull_secrets
    output = tuning.output
    volumes.append({"name": "results-volume", **(output.volume_source or {"emptyDir": {}})})
    trainer: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "command": ["kaito", "tune", "--preset", preset.name, "--method", tuning.method,
                    "--config", TRAINING_CONFIG_PATH, "--data", DATA_DIR, "--output-dir", RESULTS_DIR],
        "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "config-volume", "mountPath": CONFIG_DIR},
                         data_mount, results_mount],
    }
    if gpus:
        trainer["resources"] = gpu_resources(gpus)
    containers = [trainer]
    if output.image:
        # The same manifest annotations as the trainer's own push (base preset, revision, method): one digest.
        pusher = {"name": "pusher", "image": image,
                  "command": ["kaito", "adapter", "push", "--wait-for", RESULTS_DIR, output.image, "--preset",
                              preset.name, "--revision", preset.revision, "--method", tuning.method],
                  "volumeMounts": [results_mount]}
        with_docker_config(pusher, volumes, "push-secret", output.image_push_secret)
        containers.append(pusher)
        pull_secrets.append(output.image_push_secret)
    # OnFailure restarts a crashed container in the same pod, so the emptyDir results volume survives: the trainer
    # resumes from its last checkpoint and a failed push is retried without retraining.
    spec = pod_spec(ws, containers, volumes, init_containers, gpus, pull_secrets, restartPolicy="OnFailure")
    out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(ws, ws.name),
                "spec": {"backoffLimit": TUNING_BACKOFF_LIMIT, "template": {"metadata": {"labels": labels(ws)}, "spec": spec}}})
    return out


# ---------------------------------------------------------------------------------------------------------------


def render(ws: Workspace, preset, fit: FitReport | None = None, settings: RenderSettings | None = None
           ) -> list[dict[str, Any]]:
    """All manifests of a validated Workspace, in apply order, each stamped with its spec hash."""
    fit = fit or FitReport()
    settings = settings or RenderSettings()
    if ws.tuning is not None:
        manifests = render_tuning(ws, preset, fit, settings)
    else:
        manifests = render_inference(ws, preset, fit, settings)
    return [with_hash(m) for m in manifests]


class _Dumper(yaml.SafeDumper):
    """Readable YAML: no &anchors for shared sub-dicts, multi-line strings (embedded configs) as | blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
