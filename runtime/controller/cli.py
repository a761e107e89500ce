"""`kaito render | apply | get workspace | controller | run | down`: the Workspace commands.

Only the standard library at module level (the CLI must start fast); yaml, kubernetes and kopf are imported
inside the handlers.
"""

from __future__ import annotations

import datetime as dt
import os
import sys


def add_commands(sub) -> None:
    p = sub.add_parser("render", help="print the Kubernetes manifests of a Workspace YAML")
    p.add_argument("-f", "--filename", required=True, help="Workspace YAML ('-' for stdin)")
    p.add_argument("-n", "--namespace", help="namespace for the manifests (default: the file's, else default)")
    p.set_defaults(handler=_render)

    p = sub.add_parser("apply", help="create or update a Workspace in the current kube context")
    p.add_argument("-f", "--filename", required=True, help="Workspace YAML ('-' for stdin)")
    p.add_argument("-n", "--namespace", help="namespace (default: the file's, else default)")
    p.set_defaults(handler=_apply)

    p = sub.add_parser("get", help="list Workspaces with their conditions (like kubectl get workspace)")
    p.add_argument("resource", choices=["workspace", "workspaces", "wk", "wks"], help="what to list")
    p.add_argument("name", nargs="?", help="one Workspace")
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: default)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.set_defaults(handler=_get)

    p = sub.add_parser("controller", help="run the Workspace operator (kopf) against the current kube context")
    p.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable)")
    p.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.set_defaults(handler=_controller)

    p = sub.add_parser("run", help="run a Workspace on this machine, without Kubernetes")
    p.add_argument("-f", "--filename", required=True, action="append",
                   help="YAML with the Workspace, and the ConfigMaps and Secrets its pod reads ('-' for stdin; "
                   "repeatable, as with kubectl)")
    p.add_argument("--local", action="store_true", required=True,
                   help="run here, without Kubernetes: the rendered pod (see --engine)")
    p.add_argument("--engine", choices=["podman", "docker", "process"], default=None,
                   help="podman (default where installed): the rendered pod, played with `podman kube play`, images "
                   "from the local store ($KAITO_BUILDER_ROOT); docker: its containers with `docker run`; process: "
                   "their `kaito` commands in this environment")
    p.add_argument("--port", type=int, default=5000, help="local port of the server (default 5000)")
    p.add_argument("--image", help="image to run instead of <registry>/kaito-<preset>:<tag> (podman/docker)")
    p.add_argument("--dry-run", action="store_true", help="print the pod (podman) or the commands instead of running")
    p.add_argument("--detach", "-d", action="store_true",
                   help="return once the server is ready and leave its pod running (podman); `kaito down` removes it")
    p.add_argument("--build", action="store_true",
                   help="build the preset image first, on the local base (podman; as `docker compose up --build`)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("down", help="remove what `kaito run --local --detach` left running")
    p.add_argument("-f", "--filename", required=True, action="append", help="the files given to kaito run")
    p.set_defaults(handler=_down)


def _documents(filename: str) -> list:
    import yaml

    from runtime.command import CommandError

    try:
        text = sys.stdin.read() if filename == "-" else open(filename, encoding="utf-8").read()
    except OSError as err:
        raise CommandError(f"cannot read {filename}: {err.strerror}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as err:
        raise CommandError(f"{filename} is not valid YAML: {err}") from None


def _load(filename: str | list[str], namespace: str | None = None, others: list | None = None) -> dict:
    """The one Workspace among the files; the other documents go to `others` when given."""
    from runtime.command import CommandError

    filenames = [filename] if isinstance(filename, str) else filename
    docs = [doc for name in filenames for doc in _documents(name)]
    workspaces = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Workspace"]
    if len(workspaces) != 1:
        raise CommandError(f"{', '.join(filenames)} must hold exactly one Workspace, found {len(workspaces)}")
    if others is not None:
        others += [d for d in docs if d is not workspaces[0]]
    obj = workspaces[0]
    obj.setdefault("metadata", {})
    if namespace:
        obj["metadata"]["namespace"] = namespace
    obj["metadata"].setdefault("namespace", "default")
    return obj


def _resolve(obj: dict):
    from runtime.command import CommandError
    from runtime.controller import spec

    try:
        resolved = spec.resolve(obj)
    except spec.WorkspaceInvalid as err:
        raise CommandError("invalid Workspace:\n  " + "\n  ".join(str(p) for p in err.problems)) from None
    for warning in resolved.fit.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return resolved


def _render(args) -> int:
    from runtime.controller import render

    resolved = _resolve(_load(args.filename, args.namespace))
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit,
                              render.RenderSettings.from_env(os.environ))
    sys.stdout.write(render.to_yaml(manifests))
    return 0


def _client():
    from runtime.command import CommandError
    from runtime.controller import kube

    try:
        return kube.api_client()
    except Exception as err:  # ConfigException, missing kubeconfig: say what to do
        raise CommandError(f"no Kubernetes context: {err} (set KUBECONFIG or run in a cluster)") from None


def _apply(args) -> int:
    from runtime.controller import kube

    obj = _load(args.filename, args.namespace)
    _resolve(obj)  # refuse what the controller would refuse, before it reaches the cluster
    outcome = kube.apply_workspace(_client(), obj)
    print(f"workspace.kaito.sh/{obj['metadata']['name']} {outcome}")
    return 0


def _age(created: str | None, now: dt.datetime | None = None) -> str:
    """kubectl's AGE: 45s, 12m, 5h, 3d."""
    if not created:
        return "<unknown>"
    start = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - start).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def workspace_table(items: list[dict], now: dt.datetime | None = None) -> str:
    """The seed's `kubectl get workspace` table, plus WORKSPACEREADY (the quick start's third column)."""
    from runtime.controller import status

    header = ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED", "WORKSPACESUCCEEDED",
              "WORKSPACEREADY", "AGE"]
    rows = [header]
    for obj in items:
        meta = obj.get("metadata", {})
        rows.append([
            meta.get("name", ""),
            (obj.get("resource") or {}).get("instanceType") or "",
            status.condition_status(obj, status.RESOURCE_READY),
            status.condition_status(obj, status.INFERENCE_READY),
            status.condition_status(obj, status.JOB_STARTED),
            status.condition_status(obj, status.WORKSPACE_SUCCEEDED),
            status.condition_status(obj, status.WORKSPACE_READY),
            _age(meta.get("creationTimestamp"), now),
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"


def _get(args) -> int:
    from runtime.command import CommandError
    from runtime.controller import kube

    client = _client()
    namespace = None if args.all_namespaces else (args.namespace or "default")
    if args.name:
        obj = kube.read_workspace(client, args.name, namespace or "default")
        if obj is None:
            raise CommandError(f'workspaces.kaito.sh "{args.name}" not found', code=1)
        items = [obj]
    else:
        items = kube.list_workspaces(client, namespace)
        if not items:
            print(f"No resources found in {namespace or 'any'} namespace.", file=sys.stderr)
            return 0
    sys.stdout.write(workspace_table(items))
    return 0


def _controller(args) -> int:
    import asyncio

    import kopf

    import runtime.controller.handlers  # noqa: F401  (registers the handlers)

    kwargs = {"namespaces": args.namespace} if args.namespace else {"clusterwide": True}
    asyncio.run(kopf.operator(standalone=True, liveness_endpoint=args.liveness, **kwargs))
    return 0


def _run(args) -> int:
    from runtime.controller import local
    from runtime.controller.play import OBJECT_KINDS

    others: list = []
    resolved = _resolve(_load(args.filename, others=others))
    objects = [d for d in others if isinstance(d, dict) and d.get("kind") in OBJECT_KINDS]
    for doc in others:
        if doc not in objects:
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            print(f"warning: a {kind} among the -f files is not used: kaito run reads the Workspace and the "
                  f"{' and '.join(OBJECT_KINDS)}s its pod reads", file=sys.stderr)
    code = local.run(resolved, engine=args.engine, port=args.port, image=args.image, dry_run=args.dry_run,
                     detach=args.detach, build=args.build, objects=objects)
    if code == 0 and args.detach and not args.dry_run:
        print(f"detached; remove it with: kaito down -f {' -f '.join(args.filename)}", file=sys.stderr)
    return code


def _down(args) -> int:
    from runtime.controller import local

    return local.down(_resolve(_load(args.filename, others=[])))
