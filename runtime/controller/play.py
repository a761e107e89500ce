"""`kaito run -f ws.yaml --local --engine podman`: the manifests `kaito render` prints, played with `podman kube play`.

What runs here is what the cluster would run: the rendered workload's pod (its containers, commands, environment,
init containers and volumes), as a Pod, the kind podman 4.3 plays. Only what a kubelet does and podman 4.3 does
not, or does otherwise, is changed, each for a reason:
- the pod shares this machine's network (`hostNetwork`), so what the machine reaches the pod reaches, as pods reach
  their registry in a cluster: a registry or data server on localhost too. The server therefore binds
  127.0.0.1:<port> (its `--port` and `KAITO_HOST`), where the cluster's Service would publish it;
- ConfigMap and Secret volumes and `secretKeyRef`/`configMapKeyRef` variables are filled here, as the kubelet
  does, from the rendered ConfigMaps and the files given with `-f` (podman 4.3 panics on a Secret volume without
  `optional` and ignores `items`): each volume becomes a folder of its keys, mounted as a hostPath;
- `restartPolicy: Always` becomes OnFailure: podman 4.3 re-runs an init container that succeeded under Always
  and then fails the play; under OnFailure a crashed container still restarts, as in the cluster. Init
  containers are kept once they end (podman's "always" type; its default removes them), so a failed one's
  log can be shown;
- probes are dropped (podman runs them only under systemd); `kaito run` waits for the server's readiness itself;
- scheduling (node affinity, tolerations) is dropped: one node. imagePullSecrets are not given to podman: images
  come from the local store, and a missing one is pulled here with their credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.command import CommandError
from runtime.controller.render import TRAINER_CONTAINER
from runtime.kaito import INFERENCE_PORT, READY_PATH, RESULTS_DIR, TRAIN_LOG_FILE

WORKLOADS = ("Deployment", "StatefulSet", "Job")
INIT_CONTAINER_TYPE = {"io.podman.annotations.init.container.type": "always"}
"""podman keeps these init containers after they end (its default, "once", removes them, and their logs)."""
OBJECT_KINDS = ("ConfigMap", "Secret")
"""What `-f` may add beside the Workspace: what its pods read."""
LOCAL_HOST = "127.0.0.1"
# podman on hosts like this project's (shared/docs/environment.md): runc, and explicit default ulimits.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


@dataclass
class LocalPod:
    """What `podman kube play` gets, and the files of its ConfigMap and Secret volumes (folder -> name -> bytes,
    mode), written by `write` before the play."""

    pod: dict[str, Any]
    volumes: dict[Path, dict[str, tuple[bytes, int]]] = field(default_factory=dict)
    port: int | None = None
    """Where its server answers on 127.0.0.1 (None: no server, e.g. a tuning Job)."""
    pull_auth: dict[str, Any] | None = None
    """The registry credentials of its imagePullSecrets (a docker config), for pulling a missing image."""
    empty_dirs: list[Path] = field(default_factory=list)
    """Its emptyDir volumes, as folders (a kubelet's emptyDir is a folder on the node too)."""
    results: Path | None = None
    """The folder of its tuning results volume (/mnt/results), where the trainer logs its progress."""
    backoff_limit: int | None = None
    """A Job's: how many times a container may fail before the Job fails (None: not a Job)."""

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    @property
    def images(self) -> list[str]:
        spec = self.pod["spec"]
        return sorted({c["image"] for c in spec.get("initContainers", []) + spec["containers"]})

    def write(self) -> None:
        for folder in self.empty_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)  # world-writable, as Kubernetes makes an emptyDir (the images run as non-root)
        for folder, files in self.volumes.items():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)  # the runtime images run as a non-root user, as the kubelet's volumes allow
            for name, (data, mode) in files.items():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(mode)


def object_data(obj: dict[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys and their bytes (`data` is base64 in a Secret, text in a ConfigMap)."""
    kind, name = obj["kind"], obj.get("metadata", {}).get("name")
    text_field, base64_field = ("stringData", "data") if kind == "Secret" else ("data", "binaryData")
    data = {key: str(value).encode() for key, value in (obj.get(text_field) or {}).items()}
    for key, value in (obj.get(base64_field) or {}).items():
        try:
            data[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            raise CommandError(f'{kind} "{name}": {base64_field}.{key} is not base64') from None
    return data


def _missing(kind: str, name: str, where: str) -> CommandError:
    return CommandError(f'{kind} "{name}" ({where}) is not among the files given with -f; add its manifest '
                        f"with another -f (kubectl create {kind.lower()} ... --dry-run=client -o yaml writes one)")


VOLUME_SOURCES = {"configMap": ("ConfigMap", "name"), "secret": ("Secret", "secretName")}


def _project(volume: dict[str, Any], objects: dict[tuple[str, str], dict], root: Path, files: dict,
             empty_dirs: list[Path]) -> dict:
    """A ConfigMap or Secret volume as the kubelet fills it, and an emptyDir, as a hostPath folder under `root`;
    others (the memory /dev/shm, hostPath, claims) as they are."""
    if "emptyDir" in volume and volume["emptyDir"].get("medium") != "Memory":
        empty_dirs.append(root / volume["name"])
        return {"name": volume["name"], "hostPath": {"path": str(root / volume["name"]), "type": "Directory"}}
    for source_key, (kind, name_key) in VOLUME_SOURCES.items():
        source = volume.get(source_key)
        if source is None:
            continue
        name, optional = source.get(name_key), bool(source.get("optional"))
        obj = objects.get((kind, name))
        if obj is None and not optional:
            raise _missing(kind, name, f"volume {volume['name']}")
        data = object_data(obj) if obj else {}
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        folder = root / volume["name"]
        files[folder] = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise CommandError(f'{kind} "{name}" has no key {item["key"]!r} (volume {volume["name"]})')
            files[folder][item["path"]] = (data[item["key"]], item.get("mode", source.get("defaultMode", 0o644)))
        return {"name": volume["name"], "hostPath": {"path": str(folder), "type": "Directory"}}
    return volume


ENV_SOURCES = {"configMapKeyRef": "ConfigMap", "secretKeyRef": "Secret"}


def _fill_env(container: dict[str, Any], objects: dict[tuple[str, str], dict], reveal: bool) -> None:
    """`valueFrom` ConfigMap and Secret keys as values (a Secret's shown only when `reveal`, i.e. not in a dry
    run); an optional one that is missing is left out, as the kubelet does."""
    filled = []
    for var in container.get("env", []):
        ref_key = next((k for k in ENV_SOURCES if k in (var.get("valueFrom") or {})), None)
        if ref_key is None:
            filled.append(var)
            continue
        ref, kind = var["valueFrom"][ref_key], ENV_SOURCES[ref_key]
        obj = objects.get((kind, ref["name"]))
        value = object_data(obj).get(ref["key"]) if obj else None
        if value is None:
            if ref.get("optional"):
                continue
            if obj is None:
                raise _missing(kind, ref["name"], f"variable {var['name']} of container {container['name']}")
            raise CommandError(f'{kind} "{ref["name"]}" has no key {ref["key"]!r} (variable {var["name"]})')
        shown = value.decode() if reveal or kind == "ConfigMap" else f"<{kind} {ref['name']}, key {ref['key']}>"
        filled.append({"name": var["name"], "value": shown})
    if "env" in container:
        container["env"] = filled


def _serve_on_loopback(container: dict[str, Any], port: int) -> None:
    """The server binds 127.0.0.1:<port> on the shared network, where the cluster's Service would publish it."""
    command = container["command"]
    if "--port" in command:
        command[command.index("--port") + 1] = str(port)
    else:
        command += ["--port", str(port)]
    container.setdefault("env", []).append({"name": "KAITO_HOST", "value": LOCAL_HOST})


def local_pod(manifests: list[dict[str, Any]], port: int, *, images: dict[str, str] | None = None,
              objects: list[dict[str, Any]] = (), root: Path, reveal: bool = True) -> LocalPod:
    """The rendered workload's pod template as a Pod for `podman kube play`, its ConfigMap and Secret volumes
    filled from the rendered manifests and `objects` (the `-f` files; theirs win) into folders under `root`.
    `images` swaps image references (`kaito run --image`)."""
    workloads = [m for m in manifests if m["kind"] in WORKLOADS]
    if len(workloads) != 1:
        raise CommandError(f"expected one workload among the rendered manifests, got {len(workloads)}")
    known = {(m["kind"], (m.get("metadata") or {}).get("name")): m
             for m in [*manifests, *objects] if m["kind"] in OBJECT_KINDS}
    workload = workloads[0]
    template = json.loads(json.dumps(workload["spec"]["template"]))  # a copy that shares nothing: no YAML aliases
    spec = template["spec"]
    pull_auth = _pull_auth(spec.pop("imagePullSecrets", []), known)
    for key in ("affinity", "tolerations"):
        spec.pop(key, None)
    spec["hostNetwork"] = True
    if spec.get("restartPolicy", "Always") == "Always":
        spec["restartPolicy"] = "OnFailure"
    volumes: dict[Path, dict[str, tuple[bytes, int]]] = {}
    empty_dirs: list[Path] = []
    spec["volumes"] = [_project(v, known, root, volumes, empty_dirs) for v in spec.get("volumes", [])]
    folders = {v["name"]: Path(v["hostPath"]["path"]) for v in spec["volumes"] if "hostPath" in v}
    results = next((folders.get(m["name"]) for c in spec["containers"] for m in c.get("volumeMounts", [])
                    if m["mountPath"] == RESULTS_DIR), None)
    serves = None
    for container in spec.get("initContainers", []) + spec["containers"]:
        container["image"] = (images or {}).get(container["image"], container["image"])
        _fill_env(container, known, reveal)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            container.pop(probe, None)
        if any(p.get("containerPort") == INFERENCE_PORT for p in container.pop("ports", [])):
            _serve_on_loopback(container, port)
            serves = port
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": workload["metadata"]["name"], "labels": template.get("metadata", {}).get("labels", {}),
                        "annotations": INIT_CONTAINER_TYPE},
           "spec": spec}
    backoff_limit = workload["spec"].get("backoffLimit", 6) if workload["kind"] == "Job" else None
    return LocalPod(pod, volumes, serves, pull_auth, empty_dirs, results, backoff_limit)


def _pull_auth(secrets: list[dict[str, str]], known: dict[tuple[str, str], dict]) -> dict[str, Any] | None:
    """One docker config from the pull Secrets that are given; as the kubelet, a missing one is skipped (the pull
    may need none)."""
    auths: dict[str, Any] = {}
    for ref in secrets:
        obj = known.get(("Secret", ref.get("name")))
        data = object_data(obj) if obj else {}
        try:
            if ".dockerconfigjson" in data:
                auths.update(json.loads(data[".dockerconfigjson"]).get("auths", {}))
            elif ".dockercfg" in data:  # the older kubernetes.io/dockercfg type: the auths themselves
                auths.update(json.loads(data[".dockercfg"]))
        except (ValueError, AttributeError):
            raise CommandError(f'Secret "{ref.get("name")}" (imagePullSecrets): not a docker config') from None
    return {"auths": auths} if auths else None


def is_ready(port: int) -> bool:
    """Whether the server on 127.0.0.1:port passes its readiness probe (what the cluster's probe asks)."""
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll is noise here
    try:
        return httpx.get(f"http://{LOCAL_HOST}:{port}{READY_PATH}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ready_message(port: int) -> str:
    url = f"http://{LOCAL_HOST}:{port}"
    return f"ready: {url}\n  curl -s {url}/chat -d '{{\"prompt\": \"Hello\"}}'"


class Podman:
    """podman with this machine's storage (where `kaito images build` put the images) and containers.conf."""

    def __init__(self, storage_flags: list[str]):
        self.flags = storage_flags
        self._conf_dir = Path(tempfile.mkdtemp(prefix="kaito-podman-"))
        (self._conf_dir / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self._conf_dir / "containers.conf")}

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *self.flags, *args], capture_output=True, text=True, env=self.env)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["podman", *self.flags, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref).returncode == 0

    def pull(self, ref: str, auth: dict[str, Any] | None) -> subprocess.CompletedProcess:
        """`podman pull` with the pod's pull credentials (in this object's private folder), over plain http only
        where our registry client allows it (loopback, $KAITO_INSECURE_REGISTRIES)."""
        from runtime.adapters.registry import allows_plain_http

        args = ["pull", "--quiet"]
        if auth:
            authfile = self._conf_dir / "auth.json"
            authfile.write_text(json.dumps(auth))
            args += ["--authfile", str(authfile)]
        if "/" in ref and allows_plain_http(ref.split("/", 1)[0]):
            args.append("--tls-verify=false")
        return self.run(*args, ref)

    def close(self) -> None:
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def _containers(podman: Podman, pod: str) -> list[dict[str, Any]]:
    done = podman.run("ps", "-a", "--filter", f"pod={pod}", "--format", "json")
    return [c for c in json.loads(done.stdout or "[]") if not c.get("IsInfra")]


@dataclass
class _State:
    name: str
    status: str
    exit_code: int
    restarts: int


def _states(podman: Podman, pod: str) -> list[_State]:
    """The pod's containers (not its infra container) with their restart counts."""
    ids = [c["Id"] for c in _containers(podman, pod)]
    if not ids:
        return []
    done = podman.run("inspect", "--type", "container", "--format", "json", *ids)
    return [_State(c["Name"].removeprefix(f"{pod}-"), c["State"]["Status"], c["State"]["ExitCode"],
                   c.get("RestartCount", 0)) for c in json.loads(done.stdout or "[]")]


def _last_lines(podman: Podman, container: str) -> tuple[str, str]:
    """(name, last log lines) of a container; its log spans its restarts."""
    name = podman.run("inspect", "--format", "{{.Name}}", container).stdout.strip() or container
    logs = podman.run("logs", "--tail", "20", container)
    return name, (logs.stdout + logs.stderr).strip()


def stdout_lines(records: list[str]) -> list[str]:
    """The stdout lines of a k8s-file container log ("<time> <stream> <F|P> <text>" records; P: a partial
    line, continued by the next record of the same stream)."""
    lines, partial = [], ""
    for record in records:
        fields = record.split(" ", 3)
        if len(fields) < 3 or fields[1] != "stdout":
            continue
        partial += fields[3] if len(fields) == 4 else ""
        if fields[2] != "P":
            lines.append(partial)
            partial = ""
    return lines


def _last_stdout_line(podman: Podman, container: str) -> str | None:
    """The last line a container wrote on stdout (a command's result; its log lines go to stderr).

    Read from its k8s-file log, whose records name their stream: `podman logs` (4.3) glues a partial stderr
    record onto the next stdout line (found by CI: the pusher's log line and its result printed as one line).
    Other log drivers fall back to `podman logs`."""
    path = podman.run("inspect", "--format", "{{.HostConfig.LogConfig.Path}}", container).stdout.strip()
    try:
        lines = stdout_lines(Path(path).read_text(errors="replace").splitlines())
    except OSError:  # no such file: another log driver
        lines = podman.run("logs", "--tail", "5", container).stdout.splitlines()
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1] if lines else None


def _failed(podman: Podman, pod: str) -> tuple[str, str] | None:
    """(container, last log lines) of a container of `pod` that exited non-zero, if any."""
    for container in _containers(podman, pod):
        if container.get("State") == "exited" and container.get("ExitCode", 0) != 0:
            return _last_lines(podman, container["Id"])
    return None


# How `podman kube play` says an init container failed (it may be restarting again by the time the play returns).
FAILED_INIT = re.compile(r"init container ([0-9a-f]{12,64}) exited with code")


class Stopped(Exception):
    """SIGTERM arrived: stop as Ctrl-C does, through the cleanup (local.py's engines use it too)."""


def raise_stopped(signum, frame):
    raise Stopped


def state_dir(pod: str) -> Path:
    """Where a played pod's file and volume folders live while it runs (`kaito down` finds them here)."""
    return Path(tempfile.gettempdir(), f"kaito-pod-{pod}")


def play(local: LocalPod, *, port: int, storage_flags: list[str], detach: bool = False, timeout_s: float = 600,
         out=None) -> int:
    """Play the pod (its volume folders under `state_dir`), wait until it serves, then until Ctrl-C or SIGTERM;
    remove everything it started. Both signals stop it cleanly at any moment, while the pod starts too (SIGTERM
    exits 0, Ctrl-C 130). `detach`: return once it serves, leaving it to `down`."""
    import signal

    previous = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        return _play(local, port, storage_flags, detach, timeout_s, out or sys.stderr)
    except Stopped:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def down(pod: str, storage_flags: list[str], out=None) -> int:
    """Remove a played pod, its containers and volumes, and its folder."""
    out, podman = out or sys.stderr, Podman(storage_flags)
    try:
        existed = podman.run("pod", "exists", pod).returncode == 0
        path = state_dir(pod) / "pod.yaml"
        if path.exists():
            podman.run("kube", "down", str(path))
        if podman.run("pod", "exists", pod).returncode == 0:  # played from elsewhere: remove it by name
            podman.run("pod", "rm", "--force", pod)
        shutil.rmtree(state_dir(pod), ignore_errors=True)
        print(f"removed pod {pod}" if existed else f"no pod {pod} to remove", file=out, flush=True)
        return 0
    finally:
        podman.close()


class _Progress:
    """Prints each container's state when it changes (created, running, exited (code), its restarts), as
    `kubectl get pods -w` does."""

    def __init__(self, podman: Podman, pod: str, out):
        self.podman, self.pod, self.out, self.seen = podman, pod, out, {}

    def show(self) -> None:
        for container in _states(self.podman, self.pod):
            state = container.status + (f" ({container.exit_code})" if container.status == "exited" else "")
            if container.restarts:
                state += f", restarted {container.restarts}x"
            if self.seen.get(container.name) != state:
                print(f"  {container.name}: {state}", file=self.out, flush=True)
                self.seen[container.name] = state


class _TrainingLog:
    """Prints the trainer's events from its log in the results folder as they come: start, steps and loss,
    checkpoints, a resume, the end."""

    def __init__(self, results: Path | None, out):
        self.path, self.out, self.offset = (results / TRAIN_LOG_FILE if results else None), out, 0

    def show(self) -> None:
        if self.path is None or not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self.offset)
            lines = f.readlines()
            if lines and not lines[-1].endswith("\n"):  # still being written: read it next time
                lines.pop()
            self.offset += sum(len(line.encode()) for line in lines)
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            shown = _training_event(event)
            if shown:
                print(f"  trainer: {shown}", file=self.out, flush=True)


def _training_event(event: dict[str, Any]) -> str | None:
    kind, step = event.get("event"), event.get("step")
    if kind == "train_begin":
        return f"training, step {step} of {event.get('total')}"
    if kind == "log" and "loss" in event:
        return f"step {step}, loss {event['loss']:.4f}"
    if kind == "checkpoint":
        return f"checkpoint at step {step}"
    if kind == "resume":
        return f"resuming from {Path(str(event.get('checkpoint'))).name}"
    if kind == "completed":
        return f"completed at step {step}"
    return None


def _await_job(podman: Podman, local: LocalPod, progress: _Progress, out) -> int:
    """Until every container of the Job's pod has ended well (0), or one has failed more than the Job's
    backoffLimit allows (1, with its last lines). A failed container is restarted meanwhile (OnFailure)."""
    training = _TrainingLog(local.results, out)
    names = {c["name"] for c in local.pod["spec"]["containers"]}
    while True:
        progress.show()
        training.show()
        states = [s for s in _states(podman, local.name) if s.name in names]
        if len(states) == len(names) and all(s.status == "exited" and s.exit_code == 0 for s in states):
            progress.show()  # the states that ended it, seen after the last look above (found by CI)
            training.show()
            for state in states:  # what the sidecars printed last (the pusher: the image and its digest)
                last = _last_stdout_line(podman, f"{local.name}-{state.name}")
                if last and state.name != TRAINER_CONTAINER:  # the trainer's progress is shown above
                    print(f"  {state.name}: {last}", file=out, flush=True)
            print(f"{local.name} succeeded", file=out, flush=True)
            return 0
        for state in states:
            # Under OnFailure a container is restarted only after it failed; podman restarts it at once (a kubelet
            # backs off), so its count of restarts, not a state seen between two of them, says how often.
            if state.restarts >= local.backoff_limit:
                name, logs = _last_lines(podman, f"{local.name}-{state.name}")
                print(f"container {name} failed {state.restarts} times (the Job's backoffLimit); its last lines:"
                      f"\n{logs}", file=out, flush=True)
                return 1
        time.sleep(1)


def _report_failure(podman: Podman, pod: str, detail: str, out) -> int:
    """Print the failed container's last lines (else podman's message); the exit code is 1."""
    init = FAILED_INIT.search(detail)
    failed = _last_lines(podman, init[1]) if init else _failed(podman, pod)
    if failed:
        name, logs = failed
        print(f"container {name} failed; its last lines:\n{logs}", file=out, flush=True)
    else:
        print(f"{pod} failed: {detail.strip()[-2000:]}", file=out, flush=True)
    return 1


def _play(local: LocalPod, port: int, storage_flags: list[str], detach: bool, timeout_s: float, out) -> int:
    podman = Podman(storage_flags)
    workdir = state_dir(local.name)
    path = workdir / "pod.yaml"
    player: subprocess.Popen | None = None
    played = keep = keep_folder = False
    try:
        for ref in [ref for ref in local.images if not podman.image_exists(ref)]:
            print(f"pulling {ref}", file=out, flush=True)
            pulled = podman.pull(ref, local.pull_auth)
            if pulled.returncode != 0:
                refusal = (pulled.stderr.strip().splitlines() or ["?"])[-1]
                raise CommandError(f"image {ref} is not in the local image store and could not be pulled "
                                   f"({refusal}): add --build to build it first, or build it with "
                                   f"`kaito images build <preset> --local-base`")
        played = True
        shutil.rmtree(workdir, ignore_errors=True)  # a previous run's; --replace below replaces its pod
        workdir.mkdir(mode=0o700)  # the pod file may hold Secret values
        local.write()
        path.write_text(yaml.safe_dump(local.pod, sort_keys=False))
        print(f"playing {local.name} with podman kube play ({', '.join(local.images)})", file=out, flush=True)
        progress = _Progress(podman, local.name, out)
        player = podman.start("kube", "play", "--replace", str(path))  # ends once the init containers are done
        while player.poll() is None:
            progress.show()
            time.sleep(0.5)
        if player.returncode != 0:
            return _report_failure(podman, local.name, player.communicate()[1], out)
        if local.port is None:  # a Job's pod: until it ends
            print("started; waiting for its containers to end", file=out, flush=True)
            code = _await_job(podman, local, progress, out)
            keep_folder = code != 0 and local.results is not None
            if keep_folder:
                print(f"kept {local.results} (what the trainer wrote: the adapter once complete, its checkpoints); "
                      f"`kaito adapter push {local.results} <image>` pushes it again; `kaito down` removes it",
                      file=out, flush=True)
            return code
        print(f"started; waiting for http://{LOCAL_HOST}:{port}{READY_PATH} (the model loads)", file=out, flush=True)
        deadline = time.monotonic() + timeout_s
        while not is_ready(port):
            progress.show()
            if _failed(podman, local.name):
                return _report_failure(podman, local.name, "", out)
            if time.monotonic() > deadline:
                print(f"{local.name} not ready after {timeout_s:.0f}s", file=out, flush=True)
                return 1
            time.sleep(1)
        print(ready_message(port), file=out, flush=True)
        if detach:
            keep = True
            return 0
        while True:  # until Ctrl-C or SIGTERM (play() turns both into a return, after the cleanup below)
            time.sleep(3600)
    finally:
        if player is not None and player.poll() is None:  # stopped while podman still plays it
            player.terminate()
            player.wait()
        if played and not keep:
            if path.exists():
                podman.run("kube", "down", str(path))
            if not keep_folder:
                shutil.rmtree(workdir, ignore_errors=True)
        podman.close()
