"""The Kubernetes side, with the official `kubernetes` client: connect, apply manifests idempotently, read children.

Apply is create-or-replace keyed on the `kaito.sh/spec-hash` annotation that render.py stamps: an object whose
hash matches is left alone (no write, no resourceVersion churn); a changed one is replaced (a Job, whose pod
template is immutable, is deleted and created again). Services keep their allocated clusterIP across replaces.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any

from runtime.controller.render import SPEC_HASH_ANNOTATION
from runtime.controller.spec import GROUP, LABEL_WORKSPACE, PLURAL, STORAGE_VERSION

# (apiVersion, kind) -> (client API class, method suffix)
_KINDS = {
    ("v1", "ConfigMap"): ("CoreV1Api", "config_map"),
    ("v1", "Service"): ("CoreV1Api", "service"),
    ("v1", "ServiceAccount"): ("CoreV1Api", "service_account"),
    ("v1", "Pod"): ("CoreV1Api", "pod"),
    ("apps/v1", "Deployment"): ("AppsV1Api", "deployment"),
    ("apps/v1", "StatefulSet"): ("AppsV1Api", "stateful_set"),
    ("batch/v1", "Job"): ("BatchV1Api", "job"),
    ("rbac.authorization.k8s.io/v1", "Role"): ("RbacAuthorizationV1Api", "role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("RbacAuthorizationV1Api", "role_binding"),
}

_lock = threading.Lock()
_client = None


def api_client():
    """One ApiClient per process: in-cluster credentials, else the current kubeconfig context ($KUBECONFIG)."""
    global _client
    with _lock:
        if _client is None:
            from kubernetes import client, config

            settings = client.Configuration()  # our own, not the library's process-wide default
            try:
                config.load_incluster_config(client_configuration=settings)
            except config.ConfigException:
                # $KUBECONFIG is read now (the library reads it once, at import).
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                        client_configuration=settings)
            _client = client.ApiClient(settings)
        return _client


def reset() -> None:
    """Forget the cached client (tests point successive operators at different servers)."""
    global _client
    with _lock:
        _client = None


def _api(client, api_version: str, kind: str):
    import kubernetes.client

    try:
        cls, suffix = _KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"kaito-runtime does not apply {api_version} {kind}") from None
    return getattr(kubernetes.client, cls)(client), suffix


def to_dict(client, obj) -> dict[str, Any]:
    """A client model object as the plain camelCase dict the API server sent."""
    return client.sanitize_for_serialization(obj)


def _is_missing(err: Exception) -> bool:
    return getattr(err, "status", None) == 404


def apply(client, manifest: dict[str, Any]) -> str:
    """Create or replace one object; returns "created", "replaced" or "unchanged"."""
    from kubernetes.client.exceptions import ApiException

    api, suffix = _api(client, manifest["apiVersion"], manifest["kind"])
    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        existing = getattr(api, f"read_namespaced_{suffix}")(name, namespace)
    except ApiException as err:
        if not _is_missing(err):
            raise
        getattr(api, f"create_namespaced_{suffix}")(namespace, manifest)
        return "created"
    annotations = existing.metadata.annotations or {}
    if annotations.get(SPEC_HASH_ANNOTATION) == meta.get("annotations", {}).get(SPEC_HASH_ANNOTATION):
        return "unchanged"
    if manifest["kind"] == "Job":
        getattr(api, f"delete_namespaced_{suffix}")(name, namespace, propagation_policy="Background")
        getattr(api, f"create_namespaced_{suffix}")(namespace, manifest)
        return "replaced"
    body = copy.deepcopy(manifest)
    body["metadata"]["resourceVersion"] = existing.metadata.resource_version
    if manifest["kind"] == "Service" and existing.spec and existing.spec.cluster_ip:
        body["spec"].setdefault("clusterIP", existing.spec.cluster_ip)
    getattr(api, f"replace_namespaced_{suffix}")(name, namespace, body)
    return "replaced"


def delete_if_exists(client, api_version: str, kind: str, name: str, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    api, suffix = _api(client, api_version, kind)
    try:
        getattr(api, f"delete_namespaced_{suffix}")(name, namespace, propagation_policy="Background")
    except ApiException as err:
        if _is_missing(err):
            return False
        raise
    return True


def read(client, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    api, suffix = _api(client, api_version, kind)
    try:
        return to_dict(client, getattr(api, f"read_namespaced_{suffix}")(name, namespace))
    except ApiException as err:
        if _is_missing(err):
            return None
        raise


def workspace_pods(client, name: str, namespace: str) -> list[dict[str, Any]]:
    import kubernetes.client

    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace, label_selector=f"{LABEL_WORKSPACE}={name}")
    return [to_dict(client, p) for p in pods.items]


def container_log_excerpt(client, pod: dict[str, Any], container: str, head_bytes: int = 16384,
                          tail_lines: int = 100) -> str | None:
    """The start and the end of one container's log (a trainer prints its plan first and its progress last).

    None when the container has not started yet (or the pod is gone).
    """
    import kubernetes.client
    from kubernetes.client.exceptions import ApiException

    api = kubernetes.client.CoreV1Api(client)
    meta = pod["metadata"]
    try:
        head = api.read_namespaced_pod_log(meta["name"], meta["namespace"], container=container,
                                           limit_bytes=head_bytes)
        tail = api.read_namespaced_pod_log(meta["name"], meta["namespace"], container=container,
                                           tail_lines=tail_lines)
    except ApiException as err:
        if err.status in (400, 404):  # 400: the container is still waiting to start
            return None
        raise
    head = head.rsplit("\n", 1)[0] if len(head) >= head_bytes else head  # drop a line cut in half
    return head + "\n" + tail


def custom_api(client):
    import kubernetes.client

    return kubernetes.client.CustomObjectsApi(client)


def read_workspace(client, name: str, namespace: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom_api(client).get_namespaced_custom_object(GROUP, STORAGE_VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if _is_missing(err):
            return None
        raise


def list_workspaces(client, namespace: str | None) -> list[dict[str, Any]]:
    api = custom_api(client)
    if namespace is None:
        return api.list_cluster_custom_object(GROUP, STORAGE_VERSION, PLURAL)["items"]
    return api.list_namespaced_custom_object(GROUP, STORAGE_VERSION, namespace, PLURAL)["items"]


def apply_workspace(client, obj: dict[str, Any]) -> str:
    """Create a Workspace, or make the stored one match `obj` (used by `kaito apply`).

    The sections `resource`, `inference` and `tuning` are replaced whole and dropped when the file has none (a
    merge patch could not remove an adapter); labels and annotations from the file are added to the stored ones,
    so the operator's own bookkeeping annotations stay. One JSON patch, guarded by the resourceVersion read.
    """
    from kubernetes.client.exceptions import ApiException

    api = custom_api(client)
    group, version = obj["apiVersion"].split("/", 1)
    namespace = obj["metadata"].get("namespace") or "default"
    name = obj["metadata"]["name"]
    try:
        existing = api.get_namespaced_custom_object(group, version, namespace, PLURAL, name)
    except ApiException as err:
        if not _is_missing(err):
            raise
        api.create_namespaced_custom_object(group, version, namespace, PLURAL, obj)
        return "created"
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/resourceVersion",
                                  "value": existing["metadata"]["resourceVersion"]}]
    for key in ("resource", "inference", "tuning"):
        if key in obj:
            ops.append({"op": "add", "path": f"/{key}", "value": obj[key]})
        elif key in existing:
            ops.append({"op": "remove", "path": f"/{key}"})
    for key in ("labels", "annotations"):
        if obj["metadata"].get(key):
            merged = {**(existing["metadata"].get(key) or {}), **obj["metadata"][key]}
            ops.append({"op": "add", "path": f"/metadata/{key}", "value": merged})
    api.patch_namespaced_custom_object(group, version, namespace, PLURAL, name, ops,
                                       _content_type="application/json-patch+json")
    return "configured"
