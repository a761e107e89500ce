"""Pod command lines of the vLLM backend: one node (tensor parallel) and several nodes (Ray), as Kaito runs them.

They live with the controller, the package that writes pods; the inference package exposes only its CLI
(`python3 -m runtime.inference.vllm_backend ...`, a command line here, not an import). Pure functions; no vLLM.

- One node: `python3 -m runtime.inference.vllm_backend PRESET --tensor-parallel-size <GPUs> ...`.
- Several nodes (kaito-reference.md §1.4): a StatefulSet with a headless Service; the pod with
  `POD_INDEX=0` starts the Ray head on port 6379, waits until all nodes joined, then runs the server with
  `--pipeline-parallel-size <nodes> --distributed-executor-backend ray`; the other pods join the head at
  `<ws>-0.<ws>-headless.<ns>.svc.cluster.local:6379` (retrying until it answers) and block.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from presets import Preset
from runtime.kaito import ADAPTERS_DIR, INFERENCE_PORT, RAY_PORT, WEIGHTS_DIR
from runtime.sizing.plan import PlanLike


class LaunchError(ValueError):
    """A plan or preset that cannot be launched as asked (the message says why)."""


# --dtype values our server's settings accept; others (fp8, mxfp4: quantized checkpoints) are left to vLLM (auto).
SERVER_DTYPES = ("auto", "float32", "bfloat16", "float16")

# Seconds the leader waits for the workers (and a worker for the leader) before the pod fails and restarts.
RAY_INIT_TIMEOUT_S = 600
SERVER_MODULE = "runtime.inference.vllm_backend"


def leader_address(workspace: str, namespace: str) -> str:
    """DNS name of pod 0 behind the StatefulSet's headless Service `<ws>-headless`."""
    return f"{workspace}-0.{workspace}-headless.{namespace}.svc.cluster.local"


def server_command(
    preset: Preset,
    plan: PlanLike,
    *,
    port: int = INFERENCE_PORT,
    model_path: str | Path = WEIGHTS_DIR,
    adapters_dir: str | Path = ADAPTERS_DIR,
    config_path: str | Path | None = None,
    python: str = "python3",
) -> list[str]:
    """Our vLLM-backed server on one node, sized by `plan` (tensor parallel over the node's GPUs)."""
    tp, pp = int(plan.tensor_parallel_size), int(plan.pipeline_parallel_size)
    if tp > 1 and not preset.tensor_parallel:
        raise LaunchError(f"plan: tensor_parallel_size {tp} but preset {preset.name} forbids tensor parallelism")
    argv = [
        python, "-m", SERVER_MODULE, preset.name,
        "--model-path", str(model_path),
        "--port", str(port),
        "--adapters-dir", str(adapters_dir),
        "--tensor-parallel-size", str(tp),
        "--max-model-len", str(int(plan.max_model_len)),
        "--gpu-memory-utilization", str(float(plan.gpu_memory_utilization)),
        "--dtype", str(plan.dtype) if str(plan.dtype) in SERVER_DTYPES else "auto",
    ]  # fmt: skip
    if pp > 1:
        argv += ["--pipeline-parallel-size", str(pp)]
    dp = int(getattr(plan, "data_parallel_size", 1) or 1)
    if dp > 1:
        argv += ["--data-parallel-size", str(dp)]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    return argv


def multinode_command(
    preset: Preset,
    plan: PlanLike,
    workspace: str,
    namespace: str,
    *,
    port: int = INFERENCE_PORT,
    ray_port: int = RAY_PORT,
    model_path: str | Path = WEIGHTS_DIR,
    adapters_dir: str | Path = ADAPTERS_DIR,
    config_path: str | Path | None = None,
    timeout_s: int = RAY_INIT_TIMEOUT_S,
) -> list[str]:
    """`["/bin/sh", "-c", script]` for every pod of the StatefulSet; the pod's role comes from `POD_INDEX`.

    `plan.pipeline_parallel_size` is the node count, `plan.tensor_parallel_size` the GPUs per node.
    """
    nodes = int(plan.pipeline_parallel_size)
    if nodes < 2:
        raise LaunchError(f"plan: pipeline_parallel_size {nodes}: multi-node serving needs at least 2 nodes")
    if not preset.distributed:
        raise LaunchError(f"preset {preset.name} does not support multi-node (distributed) inference")
    server = server_command(
        preset, plan, port=port, model_path=model_path, adapters_dir=adapters_dir, config_path=config_path
    )
    server += ["--distributed-executor-backend", "ray"]
    head = f"{leader_address(workspace, namespace)}:{ray_port}"
    count_alive = "import ray; ray.init(address='auto'); print(sum(1 for n in ray.nodes() if n['Alive']))"
    script = f"""set -u
if [ "${{POD_INDEX:-0}}" = "0" ]; then
  ray start --head --port={ray_port}
  waited=0
  until [ "$(python3 -c {shlex.quote(count_alive)} 2>/dev/null | tail -n 1)" = "{nodes}" ]; do
    if [ "$waited" -ge {timeout_s} ]; then echo "ray: {nodes} nodes not up after {timeout_s}s" >&2; exit 1; fi
    sleep 5; waited=$((waited + 5))
  done
  exec {shlex.join(server)}
else
  waited=0
  until ray start --address={head} --block; do
    if [ "$waited" -ge {timeout_s} ]; then echo "ray: cannot join {head} after {timeout_s}s" >&2; exit 1; fi
    sleep 5; waited=$((waited + 5))
  done
fi
"""
    return ["/bin/sh", "-c", script]
