"""`kaito run -f ws.yaml --local --engine podman`: the manifests `kaito render` prints, played with `podman kube play`.

What runs here is what the cluster would run: the rendered workload's pod (its containers, commands, environment,
init containers, volumes and ConfigMaps), as a Pod, the kind podman 4.3 plays. Only what a kubelet has and podman
has not is changed, each for a reason:
- the Service's port is published on 127.0.0.1:<port> (a hostPort on the container that serves it);
- probes are dropped (podman runs them only under systemd); `kaito run` waits for the server's readiness itself;
- scheduling (node affinity, tolerations) is dropped: there is one node.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from runtime.command import CommandError
from runtime.kaito import INFERENCE_PORT, READY_PATH

WORKLOADS = ("Deployment", "StatefulSet", "Job")
# podman on hosts like this project's (shared/docs/environment.md): runc, and explicit default ulimits.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""


def local_pod(manifests: list[dict[str, Any]], port: int, images: dict[str, str] | None = None
              ) -> list[dict[str, Any]]:
    """The rendered ConfigMaps and Secrets, and the workload's pod template as a Pod, ready for `podman kube play`;
    `images` swaps image references (`kaito run --image`)."""
    workloads = [m for m in manifests if m["kind"] in WORKLOADS]
    if len(workloads) != 1:
        raise CommandError(f"expected one workload among the rendered manifests, got {len(workloads)}")
    workload = workloads[0]
    template = copy.deepcopy(workload["spec"]["template"])
    spec = template["spec"]
    for key in ("affinity", "tolerations"):
        spec.pop(key, None)
    for container in spec.get("initContainers", []) + spec["containers"]:
        container["image"] = (images or {}).get(container["image"], container["image"])
    for container in spec["containers"]:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            container.pop(probe, None)
        for container_port in container.get("ports", []):
            if container_port.get("containerPort") == INFERENCE_PORT:
                container_port.update(hostPort=port, hostIP="127.0.0.1")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": workload["metadata"]["name"], "labels": template.get("metadata", {}).get("labels", {})},
           "spec": spec}
    return [m for m in manifests if m["kind"] in ("ConfigMap", "Secret")] + [pod]


class Podman:
    """podman with this machine's storage (where `kaito images build` put the images) and containers.conf."""

    def __init__(self, storage_flags: list[str]):
        self.flags = storage_flags
        self._conf_dir = Path(tempfile.mkdtemp(prefix="kaito-podman-"))
        (self._conf_dir / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self._conf_dir / "containers.conf")}

    def run(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run(["podman", *self.flags, *args], capture_output=True, text=True, env=self.env)
        if check and done.returncode != 0:
            raise CommandError(f"podman {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}", code=1)
        return done

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref).returncode == 0

    def close(self) -> None:
        shutil.rmtree(self._conf_dir, ignore_errors=True)


def _containers(podman: Podman, pod: str) -> list[dict[str, Any]]:
    import json

    done = podman.run("ps", "-a", "--filter", f"pod={pod}", "--format", "json")
    return [c for c in json.loads(done.stdout or "[]") if not c.get("IsInfra")]


def _failed(podman: Podman, pod: str) -> tuple[str, str] | None:
    """(container, last log lines) of a container of `pod` that exited non-zero, if any."""
    for container in _containers(podman, pod):
        if container.get("State") == "exited" and container.get("ExitCode", 0) != 0:
            name = container["Names"][0] if isinstance(container.get("Names"), list) else container.get("Names")
            logs = podman.run("logs", "--tail", "20", name)
            return name, (logs.stdout + logs.stderr).strip()
    return None


class _Stopped(Exception):
    """SIGTERM arrived: stop as Ctrl-C does, through the cleanup."""


def _raise_stopped(signum, frame):
    raise _Stopped


def play(manifests: list[dict[str, Any]], *, port: int, storage_flags: list[str],
         images: dict[str, str] | None = None, timeout_s: float = 600, out=sys.stderr) -> int:
    """Play the pod, wait until it serves, then until Ctrl-C or SIGTERM; remove everything it started. Both
    signals stop it cleanly at any moment, while the pod starts too (SIGTERM exits 0, Ctrl-C 130)."""
    import signal

    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        return _play(manifests, port, storage_flags, images, timeout_s, out)
    except _Stopped:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _play(manifests, port, storage_flags, images, timeout_s, out) -> int:
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll is noise here
    docs = local_pod(manifests, port, images)
    pod_name = docs[-1]["metadata"]["name"]
    refs = sorted({c["image"] for c in docs[-1]["spec"].get("initContainers", []) + docs[-1]["spec"]["containers"]})
    podman = Podman(storage_flags)
    workdir = Path(tempfile.mkdtemp(prefix=f"kaito-play-{pod_name}-"))
    path = workdir / "pod.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    try:
        missing = [ref for ref in refs if not podman.image_exists(ref)]
        if missing:
            raise CommandError(f"image {missing[0]} is not in the local image store; build it with "
                               f"`kaito images build <preset> --local-base` (or pull it)")
        print(f"playing {pod_name} with podman kube play ({', '.join(refs)})", file=out, flush=True)
        podman.run("kube", "play", "--replace", str(path), check=True)
        url = f"http://127.0.0.1:{port}"
        print(f"started; waiting for {url}{READY_PATH} (the model loads)", file=out, flush=True)
        deadline = time.monotonic() + timeout_s
        while True:
            failed = _failed(podman, pod_name)
            if failed:
                name, logs = failed
                print(f"container {name} failed; its last lines:\n{logs}", file=out, flush=True)
                return 1
            try:
                if httpx.get(url + READY_PATH, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print(f"{pod_name} not ready after {timeout_s:.0f}s", file=out, flush=True)
                return 1
            time.sleep(1)
        print(f"ready: {url}\n  curl -s {url}/chat -d '{{\"prompt\": \"Hello\"}}'", file=out, flush=True)
        while True:  # until Ctrl-C or SIGTERM (play() turns both into a return, after the cleanup below)
            time.sleep(3600)
    finally:
        podman.run("kube", "down", str(path))
        shutil.rmtree(workdir, ignore_errors=True)
        podman.close()
