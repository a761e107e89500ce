"""Launch commands for one node and for Ray multi-node serving (pure functions, no vLLM needed).

The multi-node script is also executed with /bin/sh, with `ray`, `python3` and `sleep` replaced by small
recording scripts on PATH: no Ray cluster or GPU can run here, but the shell logic (role from POD_INDEX,
waiting for the cluster, retrying the join, the server command) is exercised for real.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

import presets
from runtime.controller.launch import LaunchError as EngineArgsError
from runtime.controller.launch import leader_address, multinode_command, server_command


@dataclasses.dataclass
class Plan:
    tensor_parallel_size: int = 8
    pipeline_parallel_size: int = 2
    gpu_memory_utilization: float = 0.84
    max_model_len: int = 8192
    dtype: str = "bfloat16"


def distributed_preset() -> presets.Preset:
    return dataclasses.replace(presets.get("tiny-llama"), name="big-model", distributed=True)


def test_leader_address_is_pod_zero_behind_the_headless_service():
    assert leader_address("ws", "team") == "ws-0.ws-headless.team.svc.cluster.local"


def test_single_node_command_carries_the_plan():
    argv = server_command(presets.get("tiny-llama"), Plan(tensor_parallel_size=4, pipeline_parallel_size=1),
                          config_path="/mnt/config/inference_config.yaml")
    assert argv[:4] == ["python3", "-m", "runtime.inference.vllm_backend", "tiny-llama"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--port") + 1] == "5000"
    assert argv[argv.index("--config") + 1] == "/mnt/config/inference_config.yaml"
    assert "--pipeline-parallel-size" not in argv and "--data-parallel-size" not in argv


def test_single_node_command_replicas_and_quantized_dtype():
    plan = Plan(tensor_parallel_size=1, pipeline_parallel_size=1, dtype="mxfp4")
    plan.data_parallel_size = 2
    argv = server_command(presets.get("tiny-llama"), plan)
    assert argv[argv.index("--data-parallel-size") + 1] == "2"
    assert argv[argv.index("--dtype") + 1] == "auto"


def test_rendered_command_is_accepted_by_the_server_cli(monkeypatch, tiny_model_dir, capsys):
    """The controller's command, run up to --print-args: our CLI takes every flag it renders."""
    from runtime.inference.vllm_backend import main

    for key in ("API_KEY", "VLLM_API_KEY", "KAITO_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    plan = Plan(tensor_parallel_size=2, pipeline_parallel_size=1, dtype="fp8")
    plan.data_parallel_size = 1
    argv = server_command(presets.get("tiny-llama"), plan, model_path=tiny_model_dir, adapters_dir="/nonexistent")
    assert main(argv[3:] + ["--print-args"]) == 0
    engine = capsys.readouterr().out.split()
    assert engine[engine.index("--tensor-parallel-size") + 1] == "2"
    assert engine[engine.index("--max-model-len") + 1] == "8192"


def test_multinode_refuses_one_node_and_non_distributed_presets():
    with pytest.raises(EngineArgsError, match="at least 2 nodes"):
        multinode_command(distributed_preset(), Plan(pipeline_parallel_size=1), "ws", "ns")
    with pytest.raises(EngineArgsError, match="does not support multi-node"):
        multinode_command(presets.get("tiny-llama"), Plan(), "ws", "ns")


def fake_bin(tmp_path: Path, alive_after: int) -> Path:
    """`ray`, `python3` and `sleep` stand-ins that append their argv to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    counter = tmp_path / "polls"
    (bin_dir / "ray").write_text(f"""#!/bin/sh
echo "ray $*" >> {log}
case "$*" in *--address*) n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter};
  [ $n -ge 3 ] || exit 1;; esac
""")
    (bin_dir / "python3").write_text(f"""#!/bin/sh
echo "python3 $*" >> {log}
if [ "$1" = "-c" ]; then n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter};
  if [ $n -ge {alive_after} ]; then echo 2; else echo 1; fi; fi
""")
    (bin_dir / "sleep").write_text(f"#!/bin/sh\necho \"sleep $*\" >> {log}\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def run_pod(argv: list[str], tmp_path: Path, pod_index: str, alive_after: int = 3) -> list[str]:
    bin_dir = fake_bin(tmp_path, alive_after)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "POD_INDEX": pod_index}
    subprocess.run(argv, env=env, check=True, timeout=30)
    return (tmp_path / "calls.log").read_text().splitlines()


def test_leader_starts_the_ray_head_waits_for_all_nodes_then_serves(tmp_path):
    argv = multinode_command(distributed_preset(), Plan(), "ws", "ns")
    assert argv[:2] == ["/bin/sh", "-c"]
    calls = run_pod(argv, tmp_path, "0")
    assert calls[0] == "ray start --head --port=6379"
    polls = [c for c in calls if c.startswith("python3 -c")]
    assert len(polls) == 3 and calls.count("sleep 5") == 2  # waited until the second node was alive
    server = calls[-1].split()
    assert server[:4] == ["python3", "-m", "runtime.inference.vllm_backend", "big-model"]
    assert server[server.index("--pipeline-parallel-size") + 1] == "2"
    assert server[server.index("--tensor-parallel-size") + 1] == "8"
    assert server[server.index("--distributed-executor-backend") + 1] == "ray"


def test_worker_joins_the_leader_and_retries_until_it_answers(tmp_path):
    argv = multinode_command(distributed_preset(), Plan(), "ws", "ns", ray_port=6380)
    calls = run_pod(argv, tmp_path, "1")
    joins = [c for c in calls if c.startswith("ray start")]
    assert joins == ["ray start --address=ws-0.ws-headless.ns.svc.cluster.local:6380 --block"] * 3
    assert not any(c.startswith("python3 -m") for c in calls)  # workers never run the server


def test_leader_gives_up_after_the_timeout(tmp_path):
    argv = multinode_command(distributed_preset(), Plan(), "ws", "ns", timeout_s=10)
    bin_dir = fake_bin(tmp_path, alive_after=10**6)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "POD_INDEX": "0"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "2 nodes not up after 10s" in done.stderr
