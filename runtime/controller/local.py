"""`kaito run -f ws.yaml --local`: run a Workspace on this machine, without Kubernetes.

The same commands the pods would run, in the same order: adapter pulls, then `kaito serve` (inference); or data
download, `kaito tune`, then `kaito adapter push` (tuning). With `--engine process` they run in this Python
environment; with `--engine podman|docker` the server runs in the preset image (the image holds the runtime).
Paths that are fixed in a pod (/mnt/adapter, /mnt/config, /mnt/data, /mnt/results) become folders under a
work directory here; a `hostPath` volumeSource is used in place.
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
from pathlib import Path

from runtime import httplog
from runtime.controller import render
from runtime.controller.spec import Resolved, runtime_of


def _kaito() -> list[str]:
    return [sys.executable, "-m", "runtime.cli"]


def _host_path(volume_source: dict | None) -> Path | None:
    if volume_source and "hostPath" in volume_source:
        return Path(volume_source["hostPath"]["path"])
    return None


def inference_commands(resolved: Resolved, workdir: Path, engine: str, port: int, image: str | None
                       ) -> tuple[list[list[str]], dict[str, str]]:
    """(commands to run in order, extra environment) for an inference Workspace."""
    import yaml

    ws, preset = resolved.workspace, resolved.preset
    if preset is None:
        from runtime.command import CommandError

        raise CommandError("inference.template workspaces cannot run locally: there is no preset to serve")
    adapters_dir, config_dir = workdir / "adapter", workdir / "config"
    adapters_dir.mkdir(parents=True, exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    config = render.default_inference_config(ws, preset, resolved.fit)
    (config_dir / render.INFERENCE_CONFIG_KEY).write_text(yaml.safe_dump(config, sort_keys=False))
    commands = [[*_kaito(), "adapter", "pull", a.source.image, "--to", str(adapters_dir / a.source.name)]
                for a in ws.inference.adapters]
    env = {a.source.name: str(a.strength_value) for a in ws.inference.adapters}
    serve = render.serve_args(ws, preset)[2:]  # drop "kaito serve"
    if engine == "process":
        serve_local = [preset.name, "--port", str(port), "--adapters-dir", str(adapters_dir), "--runtime",
                       runtime_of(ws, preset), "--config", str(config_dir / render.INFERENCE_CONFIG_KEY)]
        commands.append([*_kaito(), "serve", *serve_local])
    else:
        settings = render.RenderSettings.from_env(os.environ)
        ref = image or render.preset_image(preset, settings, ws.inference.preset.preset_options.image)
        run = [engine]
        if engine == "podman":  # podman needs runc and explicit ulimits on hosts like CI's (environment.md)
            run += ["--runtime", "runc"]
        run += ["run", "--rm", "-p", f"{port}:{render.PORT}",
                "-v", f"{adapters_dir}:{render.ADAPTERS_DIR}", "-v", f"{config_dir}:{render.CONFIG_DIR}"]
        if engine == "podman":
            run += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
        if render.gpus_per_pod(ws, preset, resolved.fit, settings):
            # docker: nvidia-container-toolkit; podman: the CDI spec that toolkit generates.
            run += ["--gpus", "all"] if engine == "docker" else ["--device", "nvidia.com/gpu=all"]
        for key, value in env.items():
            run += ["-e", f"{key}={value}"]
        commands.append([*run, ref, "kaito", "serve", *serve])
    return commands, env


def tuning_commands(resolved: Resolved, workdir: Path) -> tuple[list[list[str]], dict[str, str]]:
    """(commands to run in order, extra environment) for a tuning Workspace."""
    ws, preset = resolved.workspace, resolved.preset
    tuning = ws.tuning
    data_dir = _host_path(tuning.input.volume_source) or workdir / "data"
    results_dir = _host_path(tuning.output.volume_source) or workdir / "results"
    config_dir = workdir / "config"
    for d in (data_dir, results_dir, config_dir):
        d.mkdir(parents=True, exist_ok=True)
    commands: list[list[str]] = []
    if tuning.input.urls:
        commands.append([*_kaito(), "data", "fetch", "--to", str(data_dir), *tuning.input.urls])
    elif tuning.input.image:
        from runtime.command import CommandError

        # In a pod the dataset image's own shell copies its /data (render.py); nothing here unpacks a whole image.
        raise CommandError("tuning.input.image: dataset images cannot be used with --local; use urls or a "
                           "hostPath volumeSource")
    elif tuning.input.volume_source is not None and _host_path(tuning.input.volume_source) is None:
        from runtime.command import CommandError

        raise CommandError("tuning.input.volumeSource: only hostPath volumes can be used with --local")
    if tuning.config:
        from runtime.command import CommandError

        raise CommandError(f"tuning.config: ConfigMap {tuning.config!r} cannot be read locally; remove it to use "
                           "the default training config")
    import yaml

    config_file = config_dir / render.TRAINING_CONFIG_KEY
    config = render.default_training_config(preset, tuning.method, resolved.fit)
    config["training_config"]["TrainingArguments"]["output_dir"] = str(results_dir)
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    commands.append([*_kaito(), "tune", "--preset", preset.name, "--method", tuning.method, "--config",
                     str(config_file), "--data", str(data_dir), "--output-dir", str(results_dir)])
    if tuning.output.image:
        commands.append([*_kaito(), "adapter", "push", "--wait-for", str(results_dir), tuning.output.image])
    # The trainer keeps outputs under /mnt in a pod; here the results folder is the root it may write to.
    return commands, {"KAITO_OUTPUT_ROOT": str(results_dir)}


def _call(command: list[str], env: dict[str, str]) -> int:
    """Run one step; SIGTERM or Ctrl-C stops the step too (a server must not outlive `kaito run`)."""
    proc = subprocess.Popen(command, env=env)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _play(resolved: Resolved, *, port: int, image: str | None, dry_run: bool, objects: list[dict]) -> int:
    """An inference Workspace as the cluster would run it: its rendered manifests, played by podman (play.py)."""
    import yaml

    from runtime.command import CommandError
    from runtime.controller import play
    from runtime.images.builders import BuilderOptions

    if resolved.preset is None:
        raise CommandError("inference.template workspaces cannot run locally: there is no preset to serve")
    settings = render.RenderSettings.from_env(os.environ)
    manifests = render.render(resolved.workspace, resolved.preset, resolved.fit, settings)
    # --image: the same pod on another build of the preset image
    images = {render.preset_image(resolved.preset, settings): image} if image else {}
    if dry_run:  # the pod as it would be played; Secret values are not shown
        local = play.local_pod(manifests, port, images=images, objects=objects, reveal=False,
                               root=Path(tempfile.gettempdir(), "kaito-play-XXXXXXXX", "volumes"))
        print(yaml.safe_dump(local.pod, sort_keys=False), end="", flush=True)
        return 0
    if shutil.which("podman") is None:
        raise CommandError("--engine podman: podman is not installed")
    return play.play(manifests, port=port, images=images, objects=objects,
                     storage_flags=BuilderOptions.from_env().storage_flags())


def run(resolved: Resolved, *, engine: str = "process", port: int = 5000, image: str | None = None,
        dry_run: bool = False, workdir: Path | None = None, objects: list[dict] = ()) -> int:
    """Run the workspace's commands in order; stop at the first failure. Returns the exit code. `objects` are
    the ConfigMaps and Secrets given with -f (read by the played pod)."""
    from runtime.command import CommandError

    if engine == "podman" and resolved.workspace.tuning is None:
        return _play(resolved, port=port, image=image, dry_run=dry_run, objects=list(objects))
    if objects:
        raise CommandError("ConfigMaps and Secrets given with -f are read by the played pod: add --engine podman")
    own_workdir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"kaito-{resolved.workspace.name}-"))
    env = dict(os.environ)
    if resolved.workspace.tuning is not None:
        if engine != "process":
            raise CommandError("--engine podman/docker runs inference workspaces; tuning runs as a process")
        commands, extra = tuning_commands(resolved, workdir)
    else:
        commands, extra = inference_commands(resolved, workdir, engine, port, image)
    env.update(extra)
    if engine != "process" and not dry_run and shutil.which(engine) is None:
        raise CommandError(f"--engine {engine}: {engine} is not installed")
    try:
        for command in commands:
            shown = [httplog.redact(arg) if "://" in arg and "?" in arg else arg for arg in command]
            print("+ " + shlex.join(shown), file=sys.stderr, flush=True)  # no query strings: SAS tokens
            if dry_run:
                continue
            code = _call(command, env)
            if code != 0:
                return code
        return 0
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
