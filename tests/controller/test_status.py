"""Status from pod reality (pure): CrashLoopBackOff and OOMKilled are not Ready, the tuning life, progress."""

from __future__ import annotations

import json

from runtime.controller import status

WS = {"metadata": {"name": "ws", "namespace": "default", "generation": 3}}
DEPLOYMENT = {"spec": {"replicas": 1}}


def pod(name="ws-abc", *, scheduled=True, ready=False, container_state=None, last_state=None, phase="Running",
        node="gpu-node-1", restarts=0):
    cs = {"name": "ws", "ready": ready, "restartCount": restarts, "image": "img", "imageID": "",
          "state": container_state or ({"running": {}} if phase == "Running" else {"waiting": {"reason": "ContainerCreating"}})}
    if last_state:
        cs["lastState"] = last_state
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                   **({} if scheduled else {"reason": "Unschedulable", "message": "0/3 nodes have nvidia.com/gpu"})}]
    if scheduled:
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node} if scheduled else {},
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": [cs] if scheduled else []}}


def conditions(st: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]}


def test_ready_pod_makes_the_workspace_ready():
    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[pod(ready=True)])
    assert conditions(st) == {
        "ResourceReady": ("True", "PodsScheduled"),
        "InferenceReady": ("True", "WorkspaceInferenceStatusSuccess"),
        "WorkspaceSucceeded": ("True", "WorkspaceSucceeded"),
        "WorkspaceReady": ("True", "WorkspaceReady"),
    }
    assert st["state"] == "Ready" and st["workerNodes"] == ["gpu-node-1"] and st["observedGeneration"] == 3


def test_crashloopbackoff_is_not_ready_and_says_why():
    crashing = pod(container_state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                   last_state={"terminated": {"reason": "Error", "exitCode": 1}}, restarts=4)
    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[crashing])
    found = conditions(st)
    assert found["InferenceReady"] == ("False", "CrashLoopBackOff")
    assert found["WorkspaceReady"][0] == "False"
    assert st["state"] == "NotReady"
    message = next(c["message"] for c in st["conditions"] if c["type"] == "InferenceReady")
    assert "ws-abc" in message and "back-off" in message


def test_oomkilled_is_not_ready_even_while_restarting():
    oom = pod(container_state={"waiting": {"reason": "CrashLoopBackOff"}},
              last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}}, restarts=2)
    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[oom])
    assert conditions(st)["InferenceReady"] == ("False", "OOMKilled")
    running_again = pod(ready=False, last_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[running_again])
    assert conditions(st)["InferenceReady"] == ("False", "InferenceNotReady")  # running again, not ready yet


def test_one_bad_pod_among_ready_ones_is_reported():
    pods = [pod("a", ready=True), pod("b", container_state={"waiting": {"reason": "ImagePullBackOff"}})]
    st = status.compute_status(WS, kind="inference", workload={"spec": {"replicas": 2}}, pods=pods)
    assert conditions(st)["InferenceReady"] == ("False", "ImagePullBackOff")


def test_unschedulable_pod_is_resource_not_ready():
    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[pod(scheduled=False, phase="Pending")])
    found = conditions(st)
    assert found["ResourceReady"] == ("False", "Unschedulable")
    assert "nvidia.com/gpu" in next(c["message"] for c in st["conditions"] if c["type"] == "ResourceReady")
    assert st["state"] == "Pending"


def test_transition_time_is_kept_while_the_status_holds():
    first = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[pod(ready=True)], now="T1")
    again = status.compute_status({**WS, "status": first}, kind="inference", workload=DEPLOYMENT,
                                  pods=[pod(ready=True)], now="T2")
    assert again == first  # nothing changed: publish_status writes nothing
    broken = status.compute_status({**WS, "status": first}, kind="inference", workload=DEPLOYMENT,
                                   pods=[pod(container_state={"waiting": {"reason": "CrashLoopBackOff"}})], now="T3")
    times = {c["type"]: c["lastTransitionTime"] for c in broken["conditions"]}
    assert times["InferenceReady"] == "T3" and times["ResourceReady"] == "T1"


def test_invalid_spec_status():
    st = status.compute_status(WS, kind="inference", error="tuning.method: must be lora or qlora")
    assert conditions(st)["WorkspaceSucceeded"] == ("False", "InvalidSpec") and st["state"] == "Failed"


def job(*, active=0, succeeded=0, failed=0, complete=False, failed_cond=False, start=True):
    conds = []
    if complete:
        conds.append({"type": "Complete", "status": "True"})
    if failed_cond:
        conds.append({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit"})
    st = {"active": active, "succeeded": succeeded, "failed": failed, "conditions": conds}
    if start:
        st["startTime"] = "2026-01-01T00:00:00Z"
    return {"spec": {}, "status": st}


def test_tuning_life_pending_running_succeeded():
    st = status.compute_status(WS, kind="tuning", workload=job(start=False),
                               pods=[pod(scheduled=False, phase="Pending")])
    assert st["state"] == "Pending" and conditions(st)["JobStarted"][0] == "False"
    log = "\n".join(json.dumps(e) for e in [
        {"event": "train_begin", "step": 0, "total": 40},
        {"event": "log", "step": 10, "loss": 2.5, "epoch": 0.25},
        "not json",
        {"event": "log", "step": 20, "loss": 1.75, "epoch": 0.5},
    ] if isinstance(e, dict)) + "\nplain text line\n"
    st = status.compute_status(WS, kind="tuning", workload=job(active=1), pods=[pod(ready=True)], trainer_log=log)
    assert st["state"] == "Running"
    assert conditions(st)["JobStarted"] == ("True", "WorkspaceTuningJobStatusStarted")
    assert conditions(st)["WorkspaceSucceeded"] == ("False", "Running")
    assert st["trainingProgress"] == {"event": "log", "step": 20, "total": 40, "loss": 1.75, "epoch": 0.5,
                                      "percent": 50.0}
    done = pod(phase="Succeeded", container_state={"terminated": {"reason": "Completed", "exitCode": 0}})
    st = status.compute_status(WS, kind="tuning", workload=job(succeeded=1, complete=True), pods=[done])
    assert st["state"] == "Succeeded"
    assert conditions(st)["WorkspaceSucceeded"] == ("True", "WorkspaceSucceeded")
    assert conditions(st)["WorkspaceReady"][0] == "True"


def test_tuning_failure_carries_the_pod_reason():
    oom = pod(phase="Failed", container_state={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    st = status.compute_status(WS, kind="tuning", workload=job(failed=1, failed_cond=True), pods=[oom])
    assert st["state"] == "Failed"
    assert conditions(st)["WorkspaceSucceeded"] == ("False", "OOMKilled")
    assert conditions(st)["JobStarted"] == ("False", "Failed")


def test_publish_status_writes_only_changes():
    calls = []

    class CustomApi:
        def patch_namespaced_custom_object_status(self, *args):
            calls.append(args)

    st = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[pod(ready=True)])
    assert status.publish_status(CustomApi(), {**WS, "status": {**st, "kopf": {"x": 1}}}, st,
                                 group="kaito.sh", version="v1beta1", plural="workspaces") is False
    old = {**st, "trainingProgress": {"step": 1}}
    assert status.publish_status(CustomApi(), {**WS, "status": old}, st, group="kaito.sh", version="v1beta1",
                                 plural="workspaces") is True
    assert calls[0][-1]["status"]["trainingProgress"] is None  # merge-patch removes the stale field


def test_changed_conditions_drive_events():
    ready = status.compute_status(WS, kind="inference", workload=DEPLOYMENT, pods=[pod(ready=True)], now="T1")
    assert status.changed_conditions(ready, ready) == []
    crashing = status.compute_status({**WS, "status": ready}, kind="inference", workload=DEPLOYMENT,
                                     pods=[pod(container_state={"waiting": {"reason": "CrashLoopBackOff"}})], now="T2")
    changed = {c["type"]: c["reason"] for c in status.changed_conditions(ready, crashing)}
    assert changed == {"InferenceReady": "CrashLoopBackOff", "WorkspaceSucceeded": "CrashLoopBackOff",
                       "WorkspaceReady": "NotReady"}
