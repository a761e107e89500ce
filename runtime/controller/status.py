"""The Workspace status: conditions and state computed from what the pods really do, and its single writer.

`compute_status` is pure: it reads the workload (Deployment/StatefulSet or Job) and its pods as plain dicts and
returns the new `.status`. Kaito marks InferenceReady True while a pod crash-loops or is OOM-killed (its issues
#931 and #1493) because it reads the Deployment's counters; here every pod's container states are read, and a
pod in CrashLoopBackOff, OOMKilled, ImagePullBackOff and the like makes InferenceReady False with that reason.

Trainer progress: runtime.tuning's trainer prints one JSON event per line on stdout (`{"event": "log", "step":
12, "loss": 1.9, "epoch": 0.4, ...}`, `train_begin` carries `total`). The operator reads the start and the tail
of the trainer container's log (pods/log, no extra permission for the trainer, nothing to change in the image) and
`training_progress` folds those lines into `status.trainingProgress` {step, total, percent, epoch, loss, event}.

`publish_status` is the only function that writes `.status`; it patches only when something changed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

RESOURCE_READY = "ResourceReady"
INFERENCE_READY = "InferenceReady"
JOB_STARTED = "JobStarted"
WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
WORKSPACE_READY = "WorkspaceReady"

# Waiting reasons that mean the container will not come up by itself.
_BAD_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerError",
                "CreateContainerConfigError", "RunContainerError"}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(type_: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


def pod_problem(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a pod is broken in a way that waiting will not fix, else None."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return "Evicted", f"pod {name}: {status.get('message', 'evicted')}"
    statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    for cs in statuses:
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        waiting = state.get("waiting") or {}
        terminated = state.get("terminated") or {}
        where = f"pod {name} container {cs.get('name', '?')}"
        if terminated.get("reason") == "OOMKilled" or (waiting.get("reason") in _BAD_WAITING
                                                        and last.get("reason") == "OOMKilled"):
            restarts = cs.get("restartCount", 0)
            return "OOMKilled", f"{where} was OOM-killed (restarts: {restarts})"
        if waiting.get("reason") in _BAD_WAITING:
            detail = waiting.get("message") or (f"last exit code {last['exitCode']}" if "exitCode" in last else "")
            return waiting["reason"], f"{where}: {waiting['reason']}" + (f": {detail}" if detail else "")
        if terminated and terminated.get("exitCode", 0) != 0:
            return terminated.get("reason") or "Error", f"{where} exited with code {terminated.get('exitCode')}"
    return None


def _pod_condition(pod: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def _pod_ready(pod: dict[str, Any]) -> bool:
    cond = _pod_condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def resource_condition(pods: list[dict[str, Any]], finished: bool = False) -> dict[str, Any]:
    """ResourceReady: the pods found nodes with the resources they ask for (we do not provision nodes)."""
    if finished:
        return condition(RESOURCE_READY, True, "PodsScheduled", "the job ran on its node")
    if not pods:
        return condition(RESOURCE_READY, False, "PodsPending", "no pod created yet")
    for pod in pods:
        cond = _pod_condition(pod, "PodScheduled")
        if cond and cond.get("status") == "False":
            return condition(RESOURCE_READY, False, cond.get("reason") or "Unschedulable",
                             f"pod {pod['metadata']['name']}: {cond.get('message', '')}".rstrip(": "))
        if not cond or cond.get("status") != "True":
            return condition(RESOURCE_READY, False, "PodsPending", f"pod {pod['metadata']['name']} not scheduled yet")
    return condition(RESOURCE_READY, True, "PodsScheduled", f"{len(pods)} pod(s) scheduled")


def inference_status(workload: dict[str, Any] | None, pods: list[dict[str, Any]]) -> tuple[list[dict], str, dict]:
    if workload is None:
        return [condition(RESOURCE_READY, False, "WorkloadMissing", "the workload is not created yet"),
                condition(INFERENCE_READY, False, "WorkloadMissing", "the workload is not created yet")], "Pending", {}
    desired = int((workload.get("spec") or {}).get("replicas", 1) or 0)
    resource = resource_condition(pods)
    problems = [p for p in (pod_problem(pod) for pod in pods) if p]
    ready = sum(1 for pod in pods if _pod_ready(pod) and not pod.get("metadata", {}).get("deletionTimestamp"))
    if problems:
        reason, message = problems[0]
        inference = condition(INFERENCE_READY, False, reason, "; ".join(m for _, m in problems))
    elif desired and ready >= desired:
        inference = condition(INFERENCE_READY, True, "WorkspaceInferenceStatusSuccess",
                              f"{ready}/{desired} pod(s) ready")
    else:
        inference = condition(INFERENCE_READY, False, "InferenceNotReady", f"{ready}/{desired} pod(s) ready")
    ok = resource["status"] == "True" and inference["status"] == "True"
    state = "Ready" if ok else ("NotReady" if problems else "Pending")
    extra = {"workerNodes": sorted({p["spec"]["nodeName"] for p in pods if (p.get("spec") or {}).get("nodeName")}),
             "targetNodeCount": desired}
    return [resource, inference,
            condition(WORKSPACE_SUCCEEDED, ok, "WorkspaceSucceeded" if ok else inference["reason"], inference["message"])
            ], state, extra


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def training_progress(log_text: str | None) -> dict[str, Any] | None:
    """Fold the trainer's JSON event lines (oldest first) into the latest {step, total, percent, epoch, loss, event}."""
    progress: dict[str, Any] = {}
    for line in (log_text or "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or "event" not in event:
            continue
        progress["event"] = event["event"]
        for key in ("step", "total", "epoch", "loss"):
            if isinstance(event.get(key), int | float):
                progress[key] = event[key]
    if "step" not in progress:
        return None
    if progress.get("total"):
        progress["percent"] = round(100.0 * progress["step"] / progress["total"], 1)
    return progress


def tuning_status(job: dict[str, Any] | None, pods: list[dict[str, Any]], trainer_log: str | None = None
                  ) -> tuple[list[dict], str, dict]:
    if job is None:
        return [condition(RESOURCE_READY, False, "WorkloadMissing", "the job is not created yet"),
                condition(JOB_STARTED, False, "Pending", "the job is not created yet"),
                condition(WORKSPACE_SUCCEEDED, False, "Pending", "")], "Pending", {}
    jstatus = job.get("status") or {}
    complete = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    problems = [p for p in (pod_problem(pod) for pod in pods) if p]
    resource = resource_condition(pods, finished=bool(complete or failed))
    started = bool(jstatus.get("startTime") or jstatus.get("active") or jstatus.get("succeeded") or complete)
    running = any((pod.get("status") or {}).get("phase") in ("Running", "Succeeded") for pod in pods)
    if failed:
        message = "; ".join(m for _, m in problems) or failed.get("message") or "the job failed"
        reason = problems[0][0] if problems else (failed.get("reason") or "Failed")
        conds = [condition(JOB_STARTED, False, "Failed", message), condition(WORKSPACE_SUCCEEDED, False, reason, message)]
        state = "Failed"
    elif complete:
        conds = [condition(JOB_STARTED, True, "WorkspaceTuningJobStatusStarted", "the tuning job ran"),
                 condition(WORKSPACE_SUCCEEDED, True, "WorkspaceSucceeded", "the tuning job succeeded")]
        state = "Succeeded"
    elif started and running:
        conds = [condition(JOB_STARTED, True, "WorkspaceTuningJobStatusStarted", "the tuning job is running"),
                 condition(WORKSPACE_SUCCEEDED, False, "Running", "training")]
        state = "Running"
    else:
        message = "; ".join(m for _, m in problems) or "waiting for the job's pod"
        conds = [condition(JOB_STARTED, False, problems[0][0] if problems else "Pending", message),
                 condition(WORKSPACE_SUCCEEDED, False, "Pending", message)]
        state = "Pending"
    extra: dict[str, Any] = {"workerNodes": sorted({p["spec"]["nodeName"] for p in pods
                                                    if (p.get("spec") or {}).get("nodeName")})}
    progress = training_progress(trainer_log)
    if progress is not None:
        extra["trainingProgress"] = progress
    return [resource, *conds], state, extra


def invalid_status(message: str) -> tuple[list[dict], str, dict]:
    return [condition(WORKSPACE_SUCCEEDED, False, "InvalidSpec", message),
            condition(WORKSPACE_READY, False, "InvalidSpec", message)], "Failed", {}


def compute_status(ws_obj: dict[str, Any], *, kind: str, workload: dict[str, Any] | None = None,
                   pods: list[dict[str, Any]] | None = None, error: str | None = None,
                   trainer_log: str | None = None, now: str | None = None) -> dict[str, Any]:
    """The Workspace's new `.status`. kind is "inference" or "tuning"; `error` marks an invalid spec;
    `trainer_log` is the start and the tail of the trainer container's log (tuning progress).

    Conditions keep their lastTransitionTime while their status does not change, so a status that did not change
    compares equal to the previous one and is not written again.
    """
    pods = pods or []
    if error is not None:
        conditions, state, extra = invalid_status(error)
    elif kind == "tuning":
        conditions, state, extra = tuning_status(workload, pods, trainer_log)
    else:
        conditions, state, extra = inference_status(workload, pods)
    if error is None:
        ready = any(c["type"] == WORKSPACE_SUCCEEDED and c["status"] == "True" for c in conditions)
        conditions.append(condition(WORKSPACE_READY, ready, "WorkspaceReady" if ready else "NotReady",
                                    "" if ready else f"state {state}"))
    previous = {c.get("type"): c for c in ((ws_obj.get("status") or {}).get("conditions") or [])}
    generation = (ws_obj.get("metadata") or {}).get("generation")
    stamp = now or now_iso()
    for cond in conditions:
        old = previous.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        cond["lastTransitionTime"] = old.get("lastTransitionTime", stamp) if same else stamp
        if generation is not None:
            cond["observedGeneration"] = generation
    status: dict[str, Any] = {"conditions": conditions, "state": state, **extra}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def condition_status(ws_obj: dict[str, Any], type_: str) -> str:
    """"True", "False" or "" for one condition of a Workspace object (the `kaito get` table)."""
    for cond in (ws_obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status", "")
    return ""


def changed_conditions(old_status: dict[str, Any] | None, new_status: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions of `new_status` whose status or reason differs from `old_status` (events are posted for these)."""
    old = {c.get("type"): (c.get("status"), c.get("reason")) for c in (old_status or {}).get("conditions") or []}
    return [c for c in new_status.get("conditions", []) if old.get(c["type"]) != (c["status"], c["reason"])]


def _comparable(status: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (status or {}).items() if not k.startswith("kopf")}


def publish_status(custom_api, ws_obj: dict[str, Any], status: dict[str, Any], *, group: str, version: str,
                   plural: str) -> bool:
    """Write `status` to the Workspace through the status subresource when it differs. True if written."""
    current = _comparable(ws_obj.get("status"))
    if current == status:
        return False
    patch: dict[str, Any] = {"status": dict(status)}
    for key in current:  # merge-patch: a field that disappeared must be nulled explicitly
        if key not in status:
            patch["status"][key] = None
    meta = ws_obj["metadata"]
    custom_api.patch_namespaced_custom_object_status(group, version, meta.get("namespace", "default"), plural,
                                                     meta["name"], patch)
    return True
