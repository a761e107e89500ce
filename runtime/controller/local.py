"""`kaito run -f ws.yaml --local`: a Workspace on this machine, without Kubernetes, from its rendered pod.

Every engine runs what `kaito render` prints: the workload's pod, as `play.local_pod` fills it (ConfigMaps and
Secrets as folders, the server on 127.0.0.1:--port, this machine's network). Nothing here types a command line.
- podman: the pod itself, with `podman kube play` (play.py).
- docker: each container with `docker run --network host`, the pod's volumes as folders under a work directory.
- process: each container's command in this Python environment (`kaito` is `python -m runtime.cli`), with the
  mount paths in its arguments and variables (/mnt/adapter, /mnt/config...) mapped to those folders.
With docker and process, init containers run first, in order; then the containers run together (the trainer and
its pusher sidecar) until all end, or, for a server, until Ctrl-C or SIGTERM. A Job's container that fails is
started again, as a kubelet does under `restartPolicy: OnFailure` (a killed trainer resumes from its checkpoint),
until it has failed more often than the Job's backoffLimit. A server's failure stops the run, as does an init
container's. A failed run keeps its work directory (a trained adapter is not lost).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import httplog
from runtime.command import CommandError
from runtime.controller import play, render
from runtime.controller.spec import Resolved
from runtime.kaito import RESULTS_DIR


def default_engine() -> str:
    """podman where it is installed (the pod as the cluster runs it), else this Python environment."""
    return "podman" if shutil.which("podman") else "process"


@dataclass
class Step:
    """One container of the pod, as a command to run here."""

    container: str
    argv: list[str]
    env: dict[str, str]

    def shown(self) -> str:
        # No query strings: a data URL may carry a SAS token. Secret values never reach argv.
        return "+ " + shlex.join(httplog.redact(a) if "://" in a and "?" in a else a for a in self.argv)


def volume_folders(pod: dict[str, Any]) -> dict[str, Path | None]:
    """A host folder for each volume of the pod: hostPath in place (`local_pod` made ConfigMaps, Secrets and
    emptyDirs folders); the memory /dev/shm is the machine's own (None). Other volume sources are refused: only
    podman plays them."""
    folders: dict[str, Path | None] = {}
    for volume in pod["spec"].get("volumes", []):
        name = volume["name"]
        if "hostPath" in volume:
            folders[name] = Path(volume["hostPath"]["path"])
        elif volume.get("emptyDir", {}).get("medium") == "Memory":
            folders[name] = None
        else:
            kind = next(k for k in volume if k != "name")
            raise CommandError(f"volume {name}: {kind} volumes are played only with --engine podman; "
                               "use a hostPath volumeSource here")
    return folders


def _mounts(container: dict[str, Any], folders: dict[str, Path | None]) -> dict[str, Path]:
    return {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", [])
            if folders.get(m["name"]) is not None}


def process_step(container: dict[str, Any], folders: dict[str, Path | None]) -> Step:
    """A container's `kaito` command in this environment, its mount paths mapped to their folders."""
    mounts = sorted(_mounts(container, folders).items(), key=lambda item: -len(item[0]))

    def mapped(value: str) -> str:
        for path, folder in mounts:
            if value == path or value.startswith(path + "/"):
                return str(folder) + value[len(path):]
        return value

    command = container["command"]
    if command[0] != "kaito":
        raise CommandError(f"container {container['name']} runs {shlex.join(command)} in {container['image']}: "
                           "--engine process runs only the runtime's own `kaito` commands; use --engine podman")
    env = {v["name"]: mapped(v["value"]) for v in container.get("env", []) if "value" in v}
    if RESULTS_DIR in dict(mounts):  # the trainer keeps its outputs under /mnt in a pod: here, this folder
        env["KAITO_OUTPUT_ROOT"] = str(dict(mounts)[RESULTS_DIR])
    return Step(container["name"], [sys.executable, "-m", "runtime.cli", *map(mapped, command[1:])], env)


def docker_step(container: dict[str, Any], folders: dict[str, Path | None], pod_name: str) -> Step:
    """`docker run` of a container: its image, command (as the entrypoint, as Kubernetes does), env and mounts."""
    argv = ["docker", "run", "--rm", "--name", f"{pod_name}-{container['name']}", "--network", "host"]
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    for path, folder in _mounts(container, folders).items():
        argv += ["-v", f"{folder}:{path}{':ro' if mounts[path].get('readOnly') else ''}"]
    if any(m["mountPath"] == "/dev/shm" for m in mounts.values()):
        argv += ["--ipc", "host"]
    for var in container.get("env", []):
        if "value" in var:
            argv += ["-e", f"{var['name']}={var['value']}"]
    if container.get("resources", {}).get("limits", {}).get(render.GPU_RESOURCE):
        argv += ["--gpus", "all"]  # nvidia-container-toolkit
    command = container["command"]
    return Step(container["name"], [*argv, "--entrypoint", command[0], container["image"], *command[1:]], {})


def steps(local: play.LocalPod, engine: str) -> tuple[list[Step], list[Step]]:
    """(init steps, container steps) of the pod for `engine` (docker or process)."""
    folders = volume_folders(local.pod)
    spec = local.pod["spec"]

    def step(container):
        return process_step(container, folders) if engine == "process" else docker_step(container, folders, local.name)

    return [step(c) for c in spec.get("initContainers", [])], [step(c) for c in spec["containers"]]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exit_code(returncode: int) -> int:
    """A shell's and a container's way of saying a signal ended it: 128 + its number (SIGKILL: 137)."""
    return returncode if returncode >= 0 else 128 - returncode


def restart_limit(local: play.LocalPod) -> int | None:
    """How often a failed container is started again: a Job's backoffLimit under `restartPolicy: OnFailure`, as the
    kubelet and the Job controller do; None for a server's pod (its failure ends the run, with its exit code)."""
    if local.backoff_limit is None or local.pod["spec"].get("restartPolicy") != "OnFailure":
        return None
    return local.backoff_limit


def restart_delay(restarts: int) -> float:
    """Seconds before a failed container's nth start again: 1, 2, 4... up to 10. A kubelet backs off from 10 s to
    5 min to spare a shared node; one machine's run waits less, but a container that fails at once does not spin
    (and `docker run --rm` has time to free the container's name)."""
    return float(min(2 ** (restarts - 1), 10))


def _execute(init: list[Step], containers: list[Step], port: int | None, out, restarts: int | None = None) -> int:
    """Init steps in order, then the containers together until all end (or one fails for good); a server's
    readiness on `port` is announced once. A failed container is started again up to `restarts` times, after
    `restart_delay`; the others run on meanwhile."""
    base = dict(os.environ)
    procs: list[subprocess.Popen] = []
    try:
        for step in init:
            print(step.shown(), file=out, flush=True)
            procs = [subprocess.Popen(step.argv, env={**base, **step.env})]
            if procs[0].wait() != 0:
                code = _exit_code(procs[0].returncode)
                print(f"init container {step.container} failed (exit {code})", file=out, flush=True)
                return code
        procs = []
        for step in containers:
            print(step.shown(), file=out, flush=True)
            procs.append(subprocess.Popen(step.argv, env={**base, **step.env}))
        restarted = [0] * len(containers)
        waiting: dict[int, float] = {}  # a failed container's index -> when it starts again
        announced = port is None
        while True:
            if not announced and play.is_ready(port):
                print(play.ready_message(port), file=out, flush=True)
                announced = True
            codes = [None if i in waiting else p.poll() for i, p in enumerate(procs)]
            for i, code in enumerate(codes):
                if i in waiting and time.monotonic() >= waiting[i]:
                    del waiting[i]
                    procs[i] = subprocess.Popen(containers[i].argv, env={**base, **containers[i].env})
                if code in (None, 0):
                    continue
                name, exit_code = containers[i].container, _exit_code(code)
                if restarts is None or restarted[i] >= restarts:
                    after = f" after {restarted[i]} restarts (the Job's backoffLimit)" if restarts else ""
                    print(f"container {name} failed (exit {exit_code}){after}", file=out, flush=True)
                    return exit_code
                restarted[i] += 1
                delay = restart_delay(restarted[i])
                print(f"container {name} failed (exit {exit_code}); restarting it in {delay:g} s ({restarted[i]} of "
                      f"{restarts}, restartPolicy: OnFailure)", file=out, flush=True)
                waiting[i] = time.monotonic() + delay
                codes[i] = None
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.5)
    except (play.Stopped, KeyboardInterrupt):
        return 130
    finally:
        _stop(procs)


def _local_pod(resolved: Resolved, port: int, image: str | None, objects: list[dict], root: Path,
               reveal: bool) -> play.LocalPod:
    if resolved.preset is None:
        raise CommandError("inference.template workspaces cannot run locally: there is no preset to serve")
    settings = render.RenderSettings.from_env(os.environ)
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit, settings)
    # --image: the same pod on another build of the preset image
    images = {render.preset_image(resolved.preset, settings): image} if image else {}
    return play.local_pod(manifests, port, images=images, objects=objects, root=root, reveal=reveal)


def build_preset_image(preset, out) -> None:
    """`--build`: the preset image as `kaito images build <preset> --local-base` makes it, into the image store
    podman plays from (buildah or podman share it; a docker build would not)."""
    from runtime.images import base, build, context
    from runtime.images.builders import BuilderError, BuilderOptions, detect_builder
    from runtime.images.context import ContextError

    try:
        builder = detect_builder("buildah" if shutil.which("buildah") else "podman", BuilderOptions.from_env())
        print(f"building the {preset.name} image with {builder.name} on the local base", file=out, flush=True)
        result = build.build_preset_image(preset, builder, context.ContextOptions(
            base_image=base.ensure_base_image(builder)))
    except (BuilderError, ContextError) as err:
        raise CommandError(f"--build: {err}") from None
    print(f"built {result.preset_image}", file=out, flush=True)


def run(resolved: Resolved, *, engine: str | None = None, port: int = 5000, image: str | None = None,
        dry_run: bool = False, detach: bool = False, build: bool = False, objects: list[dict] = (),
        out=None) -> int:
    """Run the Workspace's rendered pod here with `engine` (default: `default_engine()`). Returns the exit code.
    `objects` are the ConfigMaps and Secrets given with -f; `detach` (podman) returns once the pod serves;
    `build` builds the preset image first (podman)."""
    engine, out = engine or default_engine(), out or sys.stderr
    for flag, given in (("--detach", detach), ("--build", build)):
        if given and engine != "podman":
            raise CommandError(f"{flag} goes with --engine podman (an inference Workspace)")
    if build and image:
        raise CommandError("--build builds the preset image the pod names; --image names another: choose one")
    if not dry_run and engine != "process" and shutil.which(engine) is None:
        raise CommandError(f"--engine {engine}: {engine} is not installed")
    if engine == "podman":
        root = play.state_dir(resolved.workspace.name) / "volumes"
        local = _local_pod(resolved, port, image, list(objects), root, reveal=not dry_run)
        if dry_run:  # the pod as it would be played; Secret values are not shown
            import yaml

            print(yaml.safe_dump(local.pod, sort_keys=False), end="", flush=True)
            return 0
        from runtime.images.builders import BuilderOptions

        if build:
            build_preset_image(resolved.preset, out)
        return play.play(local, port=port, storage_flags=BuilderOptions.from_env().storage_flags(), detach=detach,
                         out=out)
    if dry_run:
        root = Path(tempfile.gettempdir(), f"kaito-{resolved.workspace.name}-XXXXXXXX", "volumes")
        init, containers = steps(_local_pod(resolved, port, image, list(objects), root, reveal=False), engine)
        for step in init + containers:
            print(step.shown(), file=out, flush=True)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix=f"kaito-{resolved.workspace.name}-"))  # 0700: Secret files inside
    code = 1
    try:
        local = _local_pod(resolved, port, image, list(objects), workdir / "volumes", reveal=True)
        init, containers = steps(local, engine)
        local.write()
        code = _run_steps(init, containers, local.port, out, restart_limit(local))
        return code
    except CommandError:
        code = 0  # refused before anything ran: nothing to keep
        raise
    finally:
        if code in (0, 130):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} (the pod's volumes, as they were when it failed)", file=out, flush=True)


def down(resolved: Resolved, out=None) -> int:
    """`kaito down`: remove the pod `kaito run --local --detach` left running, with its containers and volumes."""
    from runtime.images.builders import BuilderOptions

    if shutil.which("podman") is None:
        raise CommandError("kaito down removes pods played with podman, and podman is not installed")
    return play.down(resolved.workspace.name, BuilderOptions.from_env().storage_flags(), out=out or sys.stderr)


def _run_steps(init: list[Step], containers: list[Step], port: int | None, out, restarts: int | None) -> int:
    """`_execute` with SIGTERM stopping the steps as Ctrl-C does."""
    previous = signal.signal(signal.SIGTERM, play.raise_stopped) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        return _execute(init, containers, port, out, restarts)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
