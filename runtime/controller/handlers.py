"""kopf handlers: orchestration only (spec -> render -> apply; children's events -> status).

- create/update/resume of a Workspace: validate (an invalid spec is a PermanentError, reported in the status),
  render, apply every manifest idempotently, drop the workload kind the spec no longer asks for, refresh status;
- an event on a labelled Pod, Deployment, StatefulSet or Job: refresh the owning Workspace's status;
- a slow timer as a safety net for missed events.
Deletion needs no handler: every child carries an owner reference to its Workspace, so Kubernetes' garbage
collector removes them (and no finalizer blocks `kubectl delete workspace`).
Run with `kaito controller` (or `kopf run -m runtime.controller.handlers -A`).
"""

from __future__ import annotations

import copy
import logging
import os

import kopf

from runtime.controller import kube, render, spec, status

log = logging.getLogger(__name__)
STATUS_TIMER_S = float(os.environ.get("KAITO_STATUS_TIMER_S", "60"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.posting.level = logging.WARNING  # only warnings and errors become Kubernetes Events
    settings.watching.server_timeout = 120
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kaito.sh")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kaito.sh")


def _kind(obj: dict) -> str:
    return "tuning" if obj.get("tuning") else "inference"


def refresh_status(obj: dict) -> dict:
    """Recompute the Workspace's status from its children and publish it (the only status writer is status.py)."""
    client = kube.api_client()
    meta = obj["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    kind = _kind(obj)
    try:
        spec.resolve(obj)  # an invalid spec stays reported, whatever its old children do
    except spec.WorkspaceInvalid as err:
        return _publish(client, obj, status.compute_status(obj, kind=kind, error=str(err)))
    if kind == "tuning":
        workload = kube.read(client, "batch/v1", "Job", name, namespace)
    else:
        workload = (kube.read(client, "apps/v1", "Deployment", name, namespace)
                    or kube.read(client, "apps/v1", "StatefulSet", name, namespace))
    pods = kube.workspace_pods(client, name, namespace)
    trainer_log = None
    if kind == "tuning" and pods:
        newest = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        trainer_log = kube.container_log_excerpt(client, newest, render.TRAINER_CONTAINER)
    return _publish(client, obj, status.compute_status(obj, kind=kind, workload=workload, pods=pods,
                                                       trainer_log=trainer_log))


def _publish(client, obj: dict, new: dict) -> dict:
    if status.publish_status(kube.custom_api(client), obj, new, group=spec.GROUP, version=spec.STORAGE_VERSION,
                             plural=spec.PLURAL):
        _post_events(obj, status.changed_conditions(obj.get("status"), new))
    return new


def _post_events(obj: dict, changed: list[dict]) -> None:
    """One Kubernetes Event per condition that changed (`kubectl describe workspace` shows the history)."""
    for cond in changed:
        healthy = cond["status"] == "True" or cond["reason"] in ("PodsPending", "Pending", "Running",
                                                                  "InferenceNotReady", "NotReady", "WorkloadMissing")
        message = f"{cond['type']} is {cond['status']}" + (f": {cond['message']}" if cond.get("message") else "")
        kopf.event(obj, type="Normal" if healthy else "Warning", reason=cond["reason"], message=message)


@kopf.on.resume(spec.GROUP, spec.STORAGE_VERSION, spec.PLURAL)
@kopf.on.create(spec.GROUP, spec.STORAGE_VERSION, spec.PLURAL)
@kopf.on.update(spec.GROUP, spec.STORAGE_VERSION, spec.PLURAL)
def reconcile(body, logger, **_) -> None:
    obj = _plain(body)
    client = kube.api_client()
    try:
        resolved = spec.resolve(obj)
    except spec.WorkspaceInvalid as err:
        refresh_status(obj)  # reports the problems in the status
        raise kopf.PermanentError(str(err)) from None
    for warning in resolved.fit.warnings:
        logger.warning(warning)
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit,
                              render.RenderSettings.from_env(os.environ))
    rendered = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for manifest in manifests:
        outcome = kube.apply(client, manifest)
        if outcome != "unchanged":
            logger.info(f"{manifest['kind']} {manifest['metadata']['name']} {outcome}")
    _drop_stale(client, resolved.workspace, rendered)
    # Re-read: the child-event handlers may have written a newer status than the body this handler started with.
    refresh_status(kube.read_workspace(client, resolved.workspace.name, resolved.workspace.namespace) or obj)


def _drop_stale(client, ws: spec.Workspace, rendered: set[tuple[str, str]]) -> None:
    """When a plan switches between one node and several, delete the workload of the other shape."""
    if ws.inference is None:
        return
    candidates = [("apps/v1", "Deployment", ws.name), ("apps/v1", "StatefulSet", ws.name),
                  ("v1", "Service", f"{ws.name}-headless")]
    for api_version, kind, name in candidates:
        if (kind, name) not in rendered:
            kube.delete_if_exists(client, api_version, kind, name, ws.namespace)


def _plain(body) -> dict:
    # kopf bodies are read-only views over the raw dict; the spec parser and status.py take plain dicts.
    return copy.deepcopy(dict(body))


def _refresh_owner(meta, **_) -> None:
    name = (meta.get("labels") or {}).get(spec.LABEL_WORKSPACE)
    namespace = meta.get("namespace", "default")
    if not name:
        return
    obj = kube.read_workspace(kube.api_client(), name, namespace)
    if obj is not None:
        refresh_status(obj)


_CHILD = {spec.LABEL_WORKSPACE: kopf.PRESENT}
kopf.on.event("", "v1", "pods", labels=_CHILD)(_refresh_owner)
kopf.on.event("apps", "v1", "deployments", labels=_CHILD)(_refresh_owner)
kopf.on.event("apps", "v1", "statefulsets", labels=_CHILD)(_refresh_owner)
kopf.on.event("batch", "v1", "jobs", labels=_CHILD)(_refresh_owner)


@kopf.timer(spec.GROUP, spec.STORAGE_VERSION, spec.PLURAL, interval=STATUS_TIMER_S, idle=STATUS_TIMER_S)
def status_timer(body, **_) -> None:
    obj = kube.read_workspace(kube.api_client(), body.metadata.name, body.metadata.namespace)
    if obj is not None:
        refresh_status(obj)
