"""An in-process FAKE Kubernetes API server (aiohttp on loopback) for the controller's reconcile tests.

Why a fake: no kube-apiserver can run on these machines (no Debian, PyPI or npm package ships one, and
etcd alone is not enough; see environment.md §Kubernetes). This fake speaks enough of the real REST and
watch protocol for the real `kubernetes` client and a real kopf operator to run unchanged against it:
discovery (/version, /api, /apis, APIResourceLists), list/get/create/replace/merge-patch/JSON-patch/delete
for namespaced and cluster objects, the status subresource, label selectors, and streaming watches that
resume from a resourceVersion. It also plays two controllers of a real cluster that the tests rely on:
the garbage collector (deleting an owner deletes the objects whose ownerReferences name its uid) and
ClusterIP allocation for Services. It runs no pods: tests write pod and Job status themselves, exactly as
the kubelet and the Job controller would.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Kind:
    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False
    short_names: tuple[str, ...] = ()


KINDS = [
    Kind("", ("v1",), "Namespace", "namespaces", namespaced=False, status=True, short_names=("ns",)),
    Kind("", ("v1",), "Pod", "pods", status=True, short_names=("po",)),
    Kind("", ("v1",), "Service", "services", status=True, short_names=("svc",)),
    Kind("", ("v1",), "ConfigMap", "configmaps", short_names=("cm",)),
    Kind("", ("v1",), "Secret", "secrets"),
    Kind("", ("v1",), "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    Kind("", ("v1",), "Event", "events", short_names=("ev",)),
    Kind("apps", ("v1",), "Deployment", "deployments", status=True, short_names=("deploy",)),
    Kind("apps", ("v1",), "StatefulSet", "statefulsets", status=True, short_names=("sts",)),
    Kind("batch", ("v1",), "Job", "jobs", status=True),
    Kind("rbac.authorization.k8s.io", ("v1",), "Role", "roles"),
    Kind("rbac.authorization.k8s.io", ("v1",), "RoleBinding", "rolebindings"),
    # The Workspace CRD, both served versions over one store (the CRD's conversion strategy is None).
    Kind("kaito.sh", ("v1beta1", "v1alpha1"), "Workspace", "workspaces", status=True, short_names=("wk", "wks")),
]


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.json_response(body, status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict, ops: list[dict]) -> dict:
    """RFC 6902 JSON patch (add, replace, remove, test), enough for kopf and the kubernetes client."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")] if op["path"] else []
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch op {kind}")
    return doc


def _parse_selector(text: str | None):
    """A label selector string -> predicate over a labels dict (=, ==, !=, key, !key)."""
    if not text:
        return lambda labels: True
    tests = []
    for term in text.split(","):
        term = term.strip()
        if "!=" in term:
            k, v = term.split("!=", 1)
            tests.append(lambda lb, k=k.strip(), v=v.strip(): lb.get(k) != v)
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            tests.append(lambda lb, k=k.strip(), v=v.strip(): lb.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda lb, k=term[1:].strip(): k not in lb)
        elif term:
            tests.append(lambda lb, k=term: k in lb)
    return lambda labels: all(t(labels) for t in tests)


@dataclass
class _Watch:
    kind: Kind
    namespace: str | None
    selector: Any
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class FakeKubeAPI:
    """Start with `with FakeKubeAPI() as api:`; `api.url` is the server address (http, no auth)."""

    def __init__(self) -> None:
        self._kinds = {(k.group, k.plural): k for k in KINDS}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], dict]] = {key: {} for key in self._kinds}
        self._history: list[tuple[int, Kind, str, dict]] = []
        self._watches: list[_Watch] = []
        self._rv = itertools.count(1)
        self._ips = itertools.count(10)
        self._logs: dict[tuple[str, str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, for tests that check what the controller did."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> FakeKubeAPI:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-kube-api", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake API server did not start")
        self.call(self._create_now, "", "namespaces", None, {"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": "default"}})
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        for watch in self._watches:
            watch.queue.put_nowait(None)
        await self._runner.cleanup()

    def call(self, fn, *args):
        """Run a store function on the server's loop (thread-safe) and return its result."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- thread-safe helpers for tests ----------------------------------------------------------------------

    def objects(self, group: str, plural: str) -> list[dict]:
        return self.call(lambda: [copy.deepcopy(o) for o in self._objects[(group, plural)].values()])

    def get(self, group: str, plural: str, namespace: str | None, name: str) -> dict | None:
        return self.call(lambda: copy.deepcopy(self._objects[(group, plural)].get((namespace or "", name))))

    def write_status(self, group: str, plural: str, namespace: str, name: str, status: dict) -> None:
        """Set an object's status as the kubelet or a built-in controller would (emits a MODIFIED event)."""
        def update():
            obj = self._objects[(group, plural)][(namespace, name)]
            obj["status"] = copy.deepcopy(status)
            self._touch(self._kinds[(group, plural)], obj, "MODIFIED")
        self.call(update)

    def set_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """What the container has printed so far (served by GET pods/<name>/log, like the kubelet's logs)."""
        self.call(lambda: self._logs.__setitem__((namespace, pod, container), text))

    # -- store ----------------------------------------------------------------------------------------------

    def _touch(self, kind: Kind, obj: dict, event: str) -> None:
        rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(rv)
        self._history.append((rv, kind, event, copy.deepcopy(obj)))
        for watch in self._watches:
            if watch.kind is kind and self._matches(watch, obj):
                watch.queue.put_nowait((event, copy.deepcopy(obj)))

    @staticmethod
    def _matches(watch: _Watch, obj: dict) -> bool:
        meta = obj["metadata"]
        if watch.namespace is not None and meta.get("namespace") != watch.namespace:
            return False
        return watch.selector(meta.get("labels") or {})

    def _create_now(self, group: str, plural: str, namespace: str | None, body: dict) -> dict:
        kind = self._kinds[(group, plural)]
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (meta.get("namespace", ""), meta["name"])
        store = self._objects[(group, plural)]
        if key in store:
            raise _Conflict(f'{plural} "{meta["name"]}" already exists')
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if kind.kind == "Service" and obj.get("spec", {}).get("clusterIP") != "None":
            obj.setdefault("spec", {})["clusterIP"] = f"10.96.0.{next(self._ips)}"
        store[key] = obj
        self._touch(kind, obj, "ADDED")
        return obj

    def _delete_now(self, kind: Kind, key: tuple[str, str]) -> dict | None:
        store = self._objects[(kind.group, kind.plural)]
        obj = store.get(key)
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                self._touch(kind, obj, "MODIFIED")
            return obj
        del store[key]
        self._touch(kind, obj, "DELETED")
        self._collect_garbage(obj["metadata"]["uid"])
        return obj

    def _collect_garbage(self, owner_uid: str) -> None:
        """What the cluster's garbage collector does: dependents of a deleted owner go too."""
        for (group, plural), store in self._objects.items():
            for key, obj in list(store.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == owner_uid for ref in owners):
                    self._delete_now(self._kinds[(group, plural)], key)

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            return await self._route(request)
        except _Conflict as err:
            return _status(409, "AlreadyExists" if "exists" in str(err) else "Conflict", str(err))
        except (ValueError, KeyError, TypeError) as err:
            return _status(422, "Invalid", f"{type(err).__name__}: {err}")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "37", "gitVersion": "v1.37.0-fake", "platform": "fake"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            groups: dict[str, list[str]] = {}
            for k in KINDS:
                if k.group:
                    groups.setdefault(k.group, list(k.versions))
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}} for g, vs in groups.items()]})
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return _status(404, "NotFound", f"no route {request.path}")
        if not rest:
            return self._discovery(group, version)
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind = self._kinds.get((group, rest[0]))
        if kind is None or version not in kind.versions:
            return _status(404, "NotFound", f"the server could not find the requested resource {request.path}")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        api_version = f"{group}/{version}" if group else version
        if name is None:
            if request.method == "GET":
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, kind, namespace, api_version)
                return self._list(request, kind, namespace, api_version)
            if request.method == "POST":
                body = await request.json()
                obj = self._create_now(group, kind.plural, namespace, body)
                return web.json_response(self._view(obj, api_version), status=201)
            return _status(405, "MethodNotAllowed", request.method)
        key = (namespace or "", name) if kind.namespaced else ("", name)
        store = self._objects[(group, kind.plural)]
        if request.method == "DELETE":
            obj = self._delete_now(kind, key)
            if obj is None:
                return _status(404, "NotFound", f'{kind.plural} "{name}" not found')
            return web.json_response(self._view(obj, api_version))
        obj = store.get(key)
        if obj is None:
            return _status(404, "NotFound", f'{kind.plural} "{name}" not found')
        if request.method == "GET" and sub == "log":
            text = self._logs.get((namespace or "", name, request.query.get("container", "")))
            if text is None:
                return _status(400, "BadRequest", f'container "{request.query.get("container")}" is waiting to start')
            tail, limit = request.query.get("tailLines"), request.query.get("limitBytes")
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail):] if tail else lines)
            return web.Response(text=text[:int(limit)] if limit else text, content_type="text/plain")
        if request.method == "GET":
            return web.json_response(self._view(obj, api_version))
        if request.method == "PUT":
            body = await request.json()
            new = self._replace(kind, obj, body, sub)
        elif request.method == "PATCH":
            body = await request.json()
            ctype = request.headers.get("Content-Type", "")
            patched = json_patch(obj, body) if "json-patch" in ctype else merge_patch(obj, body)
            new = self._replace(kind, obj, patched, sub, check_version=False)
        else:
            return _status(405, "MethodNotAllowed", request.method)
        return web.json_response(self._view(new, api_version))

    def _replace(self, kind: Kind, old: dict, body: dict, sub: str | None, check_version: bool = True) -> dict:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if check_version and wanted and wanted != old["metadata"]["resourceVersion"]:
            raise _Conflict(f"the object has been modified (resourceVersion {wanted} is stale)")
        if sub == "status":
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status"))
        else:
            new = copy.deepcopy(body)
            new.setdefault("metadata", {})
            for field_name in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
                if field_name in old["metadata"]:
                    new["metadata"][field_name] = old["metadata"][field_name]
            if kind.status:  # the status subresource: the main endpoint cannot change status
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}  # noqa: E731
            if spec_of(new) != spec_of(old):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        store = self._objects[(kind.group, kind.plural)]
        store[(old["metadata"].get("namespace", ""), old["metadata"]["name"])] = new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._delete_now(kind, (new["metadata"].get("namespace", ""), new["metadata"]["name"]))
            return new
        self._touch(kind, new, "MODIFIED")
        return new

    @staticmethod
    def _view(obj: dict, api_version: str) -> dict:
        out = copy.deepcopy(obj)
        out["apiVersion"] = api_version  # one store serves every version (no conversion needed)
        return out

    def _discovery(self, group: str, version: str) -> web.Response:
        resources = []
        for k in KINDS:
            if k.group != group or version not in k.versions:
                continue
            resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                              "kind": k.kind, "shortNames": list(k.short_names),
                              "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            if k.status:
                resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]})
        if not resources:
            return _status(404, "NotFound", f"no API {group}/{version}")
        return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": f"{group}/{version}" if group else version, "resources": resources})

    def _list(self, request: web.Request, kind: Kind, namespace: str | None, api_version: str) -> web.Response:
        selector = _parse_selector(request.query.get("labelSelector"))
        items = [self._view(o, api_version) for o in self._objects[(kind.group, kind.plural)].values()
                 if (namespace is None or o["metadata"].get("namespace") == namespace)
                 and selector(o["metadata"].get("labels") or {})]
        for item in items:  # list items carry no apiVersion/kind in real servers; the client does not mind either
            item.setdefault("kind", kind.kind)
        rv = str(self._history[-1][0]) if self._history else "0"
        return web.json_response({"kind": f"{kind.kind}List", "apiVersion": api_version,
                                  "metadata": {"resourceVersion": rv}, "items": items})

    async def _watch(self, request: web.Request, kind: Kind, namespace: str | None, api_version: str):
        watch = _Watch(kind, namespace, _parse_selector(request.query.get("labelSelector")))
        since = request.query.get("resourceVersion")
        if since and since != "0":
            backlog = [(event, obj) for rv, k, event, obj in self._history if k is kind and rv > int(since)
                       and self._matches(watch, obj)]
        else:  # no resourceVersion: the current state as ADDED events, like a real server
            backlog = [("ADDED", copy.deepcopy(o)) for o in self._objects[(kind.group, kind.plural)].values()
                       if self._matches(watch, o)]
        for item in backlog:
            watch.queue.put_nowait(item)
        self._watches.append(watch)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watch.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None:
                    break
                event, obj = item
                line = json.dumps({"type": event, "object": self._view(obj, api_version)}) + "\n"
                await response.write(line.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watches.remove(watch)
        return response


class _Conflict(Exception):
    pass
