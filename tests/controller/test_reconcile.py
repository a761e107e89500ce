"""Reconcile tests: the real kopf operator and the real `kubernetes` client against a FAKE API server.

The API server is a fake (tests/controller/fake_apiserver.py) because no kube-apiserver can run on these
machines (environment.md §Kubernetes). It speaks the REST and watch protocol, so kopf and the client run
unchanged; it plays the kubelet only in that the tests write pod, Job and log state into it, and the garbage
collector in that deleting an owner deletes its dependents. Everything the controller does goes over HTTP.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from tests.controller.fake_apiserver import FakeKubeAPI
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OPERATOR = Path(__file__).resolve().parent / "operator_under_test.py"
NS = "default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(fake API, kubernetes ApiClient) with the operator running against the fake for the whole module."""
    from kopf.testing import KopfRunner

    from runtime.controller import kube

    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "KAITO_FAKE_KUBE_URL")}
    with FakeKubeAPI() as api:
        config = tmp_path_factory.mktemp("kube") / "config"
        config.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NS}}]}))
        os.environ["KUBECONFIG"] = str(config)
        os.environ["KAITO_FAKE_KUBE_URL"] = api.url
        kube.reset()
        client = kube.api_client()
        try:
            with KopfRunner(["run", "--standalone", "-A", str(OPERATOR)], timeout=60) as runner:
                yield api, client
            Path(os.environ.get("KAITO_OPERATOR_LOG", "/dev/null")).write_text(runner.output)
            assert runner.exit_code == 0, runner.output[-3000:]
            assert runner.exception is None
        finally:
            kube.reset()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def create_workspace(client, obj: dict) -> dict:
    from runtime.controller import kube

    assert kube.apply_workspace(client, obj) == "created"
    return kube.read_workspace(client, obj["metadata"]["name"], NS)


def wait_children(api, name: str, kind: str = "inference") -> list[dict]:
    """Wait until the reconcile created every child of workspace `name`; returns them."""
    wanted = ([("", "configmaps", f"{name}-inference-params"), ("apps", "deployments", name), ("", "services", name)]
              if kind == "inference" else [("", "configmaps", f"{name}-lora-params"), ("batch", "jobs", name)])

    def probe():
        found = [api.get(group, plural, NS, child) for group, plural, child in wanted]
        return found if all(found) else None
    return wait_until(f"the children of {name}", probe)


def conditions(api, name: str) -> dict[str, tuple[str, str]]:
    ws = api.get("kaito.sh", "workspaces", NS, name) or {}
    return {c["type"]: (c["status"], c["reason"]) for c in (ws.get("status") or {}).get("conditions") or []}


def state(api, name: str) -> str | None:
    return ((api.get("kaito.sh", "workspaces", NS, name) or {}).get("status") or {}).get("state")


def create_pod(client, name: str, workspace: str) -> None:
    import kubernetes.client

    kubernetes.client.CoreV1Api(client).create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"kaito.sh/workspace": workspace}},
        "spec": {"containers": [{"name": "main", "image": "img"}]}})


def pod_status(*, scheduled=True, ready=False, waiting=None, last_terminated=None, terminated=None, phase="Running"):
    if waiting:
        state_ = {"waiting": waiting}
    elif terminated:
        state_ = {"terminated": terminated}
    else:
        state_ = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    cs = {"name": "main", "ready": ready, "restartCount": 3 if last_terminated else 0, "image": "img", "imageID": "",
          "state": state_}
    if last_terminated:
        cs["lastState"] = {"terminated": last_terminated}
    conds = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
              **({} if scheduled else {"reason": "Unschedulable", "message": "0/2 nodes are available: "
                                                                             "insufficient nvidia.com/gpu"})}]
    if scheduled:
        conds.append({"type": "Ready", "status": "True" if ready else "False"})
    return {"phase": phase if scheduled else "Pending", "conditions": conds,
            "containerStatuses": [cs] if scheduled else []}


INFERENCE = {
    "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
    "metadata": {"name": "ws-phi", "namespace": NS},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}


def test_inference_children_status_and_crashloop(cluster):
    api, client = cluster
    ws = create_workspace(client, INFERENCE)
    uid = ws["metadata"]["uid"]
    children = wait_children(api, "ws-phi")
    config, deploy, service = children
    for child in children:
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
        assert child["metadata"]["labels"]["kaito.sh/workspace"] == "ws-phi"
    assert service["spec"]["ports"][0]["port"] == 80 and service["spec"]["clusterIP"].startswith("10.96.")
    wait_until("status Pending", lambda: state(api, "ws-phi") == "Pending")
    assert conditions(api, "ws-phi")["ResourceReady"] == ("False", "PodsPending")

    create_pod(client, "ws-phi-1", "ws-phi")
    api.write_status("", "pods", NS, "ws-phi-1", pod_status(scheduled=False))
    wait_until("Unschedulable", lambda: conditions(api, "ws-phi").get("ResourceReady") == ("False", "Unschedulable"))

    api.write_status("", "pods", NS, "ws-phi-1", pod_status(ready=True))
    wait_until("state Ready", lambda: state(api, "ws-phi") == "Ready")
    assert conditions(api, "ws-phi") == {
        "ResourceReady": ("True", "PodsScheduled"), "InferenceReady": ("True", "WorkspaceInferenceStatusSuccess"),
        "WorkspaceSucceeded": ("True", "WorkspaceSucceeded"), "WorkspaceReady": ("True", "WorkspaceReady")}

    # The kubelet reports a crash loop: Kaito would stay Ready here (issues #931, #1493); we do not.
    api.write_status("", "pods", NS, "ws-phi-1", pod_status(
        waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"},
        last_terminated={"reason": "Error", "exitCode": 1}))
    wait_until("CrashLoopBackOff", lambda: conditions(api, "ws-phi").get("InferenceReady") == ("False", "CrashLoopBackOff"))
    assert state(api, "ws-phi") == "NotReady"
    assert conditions(api, "ws-phi")["WorkspaceReady"][0] == "False"
    message = next(c["message"] for c in api.get("kaito.sh", "workspaces", NS, "ws-phi")["status"]["conditions"]
                   if c["type"] == "InferenceReady")
    assert "ws-phi-1" in message and "back-off" in message

    api.write_status("", "pods", NS, "ws-phi-1", pod_status(
        waiting={"reason": "CrashLoopBackOff"}, last_terminated={"reason": "OOMKilled", "exitCode": 137}))
    wait_until("OOMKilled", lambda: conditions(api, "ws-phi").get("InferenceReady") == ("False", "OOMKilled"))

    # Each change was also posted as an Event on the Workspace (what `kubectl describe workspace` lists).
    def events():
        return {(e["type"], e["reason"]) for e in api.objects("", "events")
                if e.get("involvedObject", {}).get("name") == "ws-phi"}
    wait_until("the events", lambda: {("Warning", "CrashLoopBackOff"), ("Warning", "OOMKilled"),
                                    ("Normal", "WorkspaceInferenceStatusSuccess")} <= events())


def test_reconcile_is_idempotent_and_follows_spec_changes(cluster):
    import kubernetes.client

    from runtime.controller import kube

    api, client = cluster
    obj = copy.deepcopy(INFERENCE)
    obj["metadata"]["name"] = "ws-idem"
    create_workspace(client, obj)
    wait_children(api, "ws-idem")
    wait_until("status", lambda: state(api, "ws-idem"))
    versions = {(g, p): api.get(g, p, NS, n)["metadata"]["resourceVersion"]
                for g, p, n in (("apps", "deployments", "ws-idem"), ("", "services", "ws-idem"),
                                ("", "configmaps", "ws-idem-inference-params"))}
    writes_before = len([r for r in api.requests if r[0] in ("PUT", "POST")
                         and "ws-idem" in r[1] and "workspaces" not in r[1]])

    # A metadata-only change makes kopf call the handler again: nothing may be rewritten.
    custom = kube.custom_api(client)
    custom.patch_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-idem",
                                          {"metadata": {"annotations": {"note": "touched"}}})
    wait_until("the second reconcile", lambda: "touched" in json.dumps(
        api.get("kaito.sh", "workspaces", NS, "ws-idem")["metadata"].get("annotations", {}).get(
            "kaito.sh/last-handled-configuration", "")))
    for (group, plural), rv in versions.items():
        name = "ws-idem-inference-params" if plural == "configmaps" else "ws-idem"
        assert api.get(group, plural, NS, name)["metadata"]["resourceVersion"] == rv, plural
    writes_after = len([r for r in api.requests if r[0] in ("PUT", "POST")
                        and "ws-idem" in r[1] and "workspaces" not in r[1]])
    assert writes_after == writes_before

    # A spec change (an adapter) replaces the Deployment in place, keeping the Service's clusterIP.
    ip = api.get("", "services", NS, "ws-idem")["spec"]["clusterIP"]
    custom.patch_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-idem", {"inference": {
        "adapters": [{"source": {"name": "france", "image": "r.example.com/france:1"}}]}})

    def init_containers():
        pod = api.get("apps", "deployments", NS, "ws-idem")["spec"]["template"]["spec"]
        return [c["name"] for c in pod.get("initContainers", [])]

    assert wait_until("the adapter puller", init_containers) == ["puller-france"]
    assert api.get("", "services", NS, "ws-idem")["spec"]["clusterIP"] == ip
    deploy = kubernetes.client.AppsV1Api(client).read_namespaced_deployment("ws-idem", NS)
    assert deploy.metadata.uid == api.get("apps", "deployments", NS, "ws-idem")["metadata"]["uid"]


def test_invalid_workspace_is_reported_in_status(cluster):
    api, client = cluster
    bad = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws-bad", "namespace": NS},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        "tuning": {"preset": {"name": "tiny-llama"}, "method": "sft", "input": {"urls": ["https://e.com/d.json"]},
                   "output": {"image": "r.example.com/o:1"}},
    }
    from runtime.controller import kube

    kube.custom_api(client).create_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", bad)
    wait_until("status Failed", lambda: state(api, "ws-bad") == "Failed")
    assert conditions(api, "ws-bad")["WorkspaceSucceeded"] == ("False", "InvalidSpec")
    message = api.get("kaito.sh", "workspaces", NS, "ws-bad")["status"]["conditions"][0]["message"]
    assert "tuning.method" in message and "tuning.output.imagePushSecret" in message
    assert api.get("batch", "jobs", NS, "ws-bad") is None

    # Fixing the spec reconciles it: the permanent failure was for that spec only.
    kube.custom_api(client).patch_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-bad", {
        "tuning": {"method": "lora", "output": {"imagePushSecret": "push"}}})
    wait_until("the Job", lambda: api.get("batch", "jobs", NS, "ws-bad"))
    wait_until("state Pending", lambda: state(api, "ws-bad") == "Pending")
    assert "InvalidSpec" not in {reason for _, reason in conditions(api, "ws-bad").values()}

    # Broken again while its Job's pod runs: pod events must not paper over the invalid spec.
    kube.custom_api(client).patch_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-bad", {
        "tuning": {"method": "sft"}})
    wait_until("status Failed again", lambda: state(api, "ws-bad") == "Failed")
    create_pod(client, "ws-bad-pod", "ws-bad")
    api.write_status("", "pods", NS, "ws-bad-pod", pod_status(ready=True))
    time.sleep(1.0)  # let the pod events be handled
    assert state(api, "ws-bad") == "Failed"
    assert conditions(api, "ws-bad")["WorkspaceSucceeded"] == ("False", "InvalidSpec")


def test_tuning_job_whole_life(cluster):
    api, client = cluster
    obj = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws-tune", "namespace": NS},
        "resource": {"labelSelector": {"matchLabels": {"apps": "tune"}}},
        "tuning": {"preset": {"name": "tiny-llama"}, "method": "lora",
                   "input": {"urls": ["https://example.com/data/train.jsonl"]},
                   "output": {"image": "r.example.com/adapters/tiny:0.0.1", "imagePushSecret": "push"}},
    }
    ws = create_workspace(client, obj)
    _, job = wait_children(api, "ws-tune", "tuning")
    assert job["metadata"]["ownerReferences"][0]["uid"] == ws["metadata"]["uid"]
    assert [c["name"] for c in job["spec"]["template"]["spec"]["containers"]] == ["trainer", "pusher"]
    wait_until("Pending", lambda: state(api, "ws-tune") == "Pending")
    assert conditions(api, "ws-tune")["JobStarted"][0] == "False"

    # The Job controller starts a pod; the kubelet runs it; the trainer prints progress events.
    create_pod(client, "ws-tune-x1", "ws-tune")
    # Longer than the tail the operator reads: `total` must come from the log's start.
    events = [{"event": "train_begin", "step": 0, "total": 300}] + [
        {"event": "log", "step": step, "loss": round(3.0 - step / 100, 2), "epoch": step / 300} for step in range(1, 121)]
    api.set_log(NS, "ws-tune-x1", "trainer", "\n".join(json.dumps(e) for e in events) + "\n")
    api.write_status("batch", "jobs", NS, "ws-tune", {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
    api.write_status("", "pods", NS, "ws-tune-x1", pod_status(ready=True))
    wait_until("Running", lambda: state(api, "ws-tune") == "Running")
    assert conditions(api, "ws-tune")["JobStarted"] == ("True", "WorkspaceTuningJobStatusStarted")
    progress = wait_until("progress", lambda: api.get("kaito.sh", "workspaces", NS, "ws-tune")["status"].get(
        "trainingProgress"))
    assert progress == {"event": "log", "step": 120, "total": 300, "loss": 1.8, "epoch": 0.4, "percent": 40.0}

    api.write_status("", "pods", NS, "ws-tune-x1", pod_status(
        phase="Succeeded", terminated={"reason": "Completed", "exitCode": 0}))
    api.write_status("batch", "jobs", NS, "ws-tune", {
        "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:10:00Z",
        "conditions": [{"type": "Complete", "status": "True"}]})
    wait_until("Succeeded", lambda: state(api, "ws-tune") == "Succeeded")
    assert conditions(api, "ws-tune")["WorkspaceSucceeded"] == ("True", "WorkspaceSucceeded")
    assert conditions(api, "ws-tune")["WorkspaceReady"] == ("True", "WorkspaceReady")


def test_deleting_the_workspace_deletes_its_children(cluster):
    from runtime.controller import kube

    api, client = cluster
    obj = copy.deepcopy(INFERENCE)
    obj["metadata"]["name"] = "ws-gone"
    create_workspace(client, obj)
    wait_children(api, "ws-gone")
    kube.custom_api(client).delete_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-gone")
    wait_until("the Workspace to go", lambda: api.get("kaito.sh", "workspaces", NS, "ws-gone") is None)
    for group, plural, name in (("apps", "deployments", "ws-gone"), ("", "services", "ws-gone"),
                                ("", "configmaps", "ws-gone-inference-params")):
        assert api.get(group, plural, NS, name) is None, plural


def test_changing_the_plan_swaps_statefulset_and_deployment(cluster):
    from runtime.controller import kube

    api, client = cluster
    obj = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws-big", "namespace": NS},
        "resource": {"instanceType": "Standard_NC48ads_A100_v4", "count": 2,
                     "labelSelector": {"matchLabels": {"apps": "big"}}},
        "inference": {"preset": {"name": "llama-3.3-70b-instruct"}},
    }
    create_workspace(client, obj)  # 2 x (2 x A100 80GB): the plan needs both nodes
    sts = wait_until("the StatefulSet", lambda: api.get("apps", "statefulsets", NS, "ws-big"))
    assert sts["spec"]["replicas"] == 2
    assert wait_until("the headless Service", lambda: api.get("", "services", NS, "ws-big-headless"))
    assert wait_until("the leader Service", lambda: api.get("", "services", NS, "ws-big"))["spec"]["selector"][
        "statefulset.kubernetes.io/pod-name"] == "ws-big-0"
    assert api.get("apps", "deployments", NS, "ws-big") is None

    # One bigger node fits the model: the StatefulSet and its headless Service give way to a Deployment.
    kube.custom_api(client).patch_namespaced_custom_object("kaito.sh", "v1beta1", NS, "workspaces", "ws-big", {
        "resource": {"instanceType": "Standard_NC80adis_H100_v5", "count": 1}})
    wait_until("the Deployment", lambda: api.get("apps", "deployments", NS, "ws-big"))
    wait_until("the StatefulSet to go", lambda: api.get("apps", "statefulsets", NS, "ws-big") is None)
    assert api.get("", "services", NS, "ws-big-headless") is None
    assert "statefulset.kubernetes.io/pod-name" not in api.get("", "services", NS, "ws-big")["spec"]["selector"]


def test_everything_the_operator_created_is_strictly_valid(cluster):
    """What reached the API server (not only what render returns) passes `kubernetes-validate --strict`."""
    from tests.controller.strict import validate_strict

    api, client = cluster
    inference = copy.deepcopy(INFERENCE)
    inference["metadata"]["name"] = "ws-valid"
    inference["inference"]["adapters"] = [{"source": {"name": "a", "image": "r.example.com/a:1"}}]
    tuning = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune-valid", "namespace": NS},
              "resource": {"labelSelector": {"matchLabels": {"apps": "t"}}},
              "tuning": {"preset": {"name": "tiny-llama"}, "method": "lora", "input": {"urls": ["https://e.com/d.json"]},
                         "output": {"image": "r.example.com/o:1", "imagePushSecret": "push"}}}
    create_workspace(client, inference)
    create_workspace(client, tuning)
    wait_children(api, "ws-valid")
    wait_children(api, "tune-valid", "tuning")
    seen = 0
    for group, plural in (("", "configmaps"), ("", "services"), ("apps", "deployments"), ("apps", "statefulsets"),
                          ("batch", "jobs")):
        for obj in api.objects(group, plural):
            if not (obj["metadata"].get("labels") or {}).get("kaito.sh/workspace"):
                continue
            validate_strict(obj)
            seen += 1
    assert seen >= 5
