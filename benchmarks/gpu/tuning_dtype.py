"""GPU check of the tuning dtype rule (issue 20), for a lent GPU machine with no network. About a minute.

The rendered training_config carries the sizing plan's dtype: bfloat16 from compute capability 8.0 (A100, H100),
float16 below (V100, T4); the trainer turns a bfloat16 that the GPU lacks into float16 with one warning. No test
here has a GPU, so this trains the tiny model with QLoRA on the GPU three ways and checks each ends with an
adapter, a finite loss, and the dtypes it should:

- the ConfigMap rendered for an A100 plan (bfloat16, bf16 autocast);
- the ConfigMap rendered for a V100 plan (float16, fp16 autocast: the path a V100 takes, run on this GPU);
- no dtype at all (the trainer picks for this GPU: bfloat16 from 8.0 up).

    .venv/bin/python -m benchmarks.gpu.tuning_dtype            # on the GPU machine
    .venv/bin/python -m benchmarks.gpu.tuning_dtype --cpu      # the same steps on CPU, to test this script

Writes $OUT/tuning_dtype.json (or benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from runtime.tuning.config import default_document

ROOT = Path(__file__).resolve().parents[2]
CHAT = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": "The capital of France is Paris."}]}


def run_case(work: Path, name: str, dtype: str | None, expected: str, steps: int) -> dict:
    case = work / name
    case.mkdir(parents=True)
    data = case / "data.jsonl"
    data.write_text((json.dumps(CHAT) + "\n") * 8)
    config = case / "training_config.yaml"
    config.write_text(yaml.safe_dump(default_document("qlora", output_dir=str(case / "results"), dtype=dtype)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "KAITO_OUTPUT_ROOT": str(case)}
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "tune", "--preset", "tiny-llama", "--config",
                           str(config), "--data", str(data), "--output-dir", str(case / "results"), "--max-steps",
                           str(steps), "--metrics-port", "0"], env=env, capture_output=True, text=True, timeout=600)
    result = {"case": name, "rendered_dtype": dtype, "exit": done.returncode,
              "dtype_lines": [line for line in done.stderr.splitlines() if "dtype for" in line]}
    if done.returncode == 0:
        meta = json.loads((case / "results" / "tuning_metadata.json").read_text())
        result.update(torch_dtype=meta["torch_dtype"], compute_dtype=meta["compute_dtype"],
                      train_loss=meta["final_metrics"]["train_loss"])
    else:
        result["stderr_tail"] = done.stderr[-2000:]
    result["ok"] = (done.returncode == 0 and result["compute_dtype"] == expected
                    and math.isfinite(result["train_loss"]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on CPU (tests this script; dtypes differ)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import torch

    if args.cpu:
        native, device = None, "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: this check is for a GPU machine (--cpu tests the script)", file=sys.stderr)
        return 2
    else:
        native = torch.cuda.get_device_capability(0) >= (8, 0)
        device = torch.cuda.get_device_name(0)
    picked = "bfloat16" if native else "float16"
    cases = [("a100-plan", "bfloat16", "bfloat16" if native is not False else "float16"),
             ("v100-plan", "float16", "float16"),
             ("no-dtype", None, picked)]
    with tempfile.TemporaryDirectory(prefix="tuning-dtype-") as tmp:
        results = [run_case(Path(tmp), name, dtype, expected, args.steps) for name, dtype, expected in cases]
    if args.cpu:  # the CPU picks by its own flags; only the script's mechanics are checked there
        for r in results:
            r["ok"] = r["exit"] == 0
    print(f"{'case':<10} {'rendered':<9} {'compute':<9} {'loss':>8}  ok   ({device})")
    for r in results:
        loss = f"{r['train_loss']:.3f}" if "train_loss" in r else "-"
        print(f"{r['case']:<10} {r['rendered_dtype'] or '-':<9} {r.get('compute_dtype', '-'):<9} {loss:>8}  {r['ok']}")
        for line in r["dtype_lines"]:
            print(f"    {line}")
    out = Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning_dtype.json").write_text(json.dumps({"device": device, "results": results}, indent=2))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
