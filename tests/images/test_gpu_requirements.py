"""The GPU image's requirements resolve around vLLM's pins, with everything the tuning Job imports.

The GPU image cannot be built here (vLLM 0.33.0 is 4.3 GB of CUDA wheels), but its dependency set can be resolved:
`pip install --dry-run --report` for the image's platform (Python 3.12, manylinux x86_64, the default GPU base)
finds a conflict here rather than in a cluster. Needs the package index (as the image tier's wheelhouse does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.images import versions

pytestmark = [pytest.mark.image, pytest.mark.slow]

REQUIREMENTS = Path(__file__).resolve().parents[2] / "images" / "runtime-gpu" / "requirements.txt"
# python:3.12-slim-bookworm has glibc 2.36: wheels for manylinux_2_17 ... 2_36 install there.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)] + ["manylinux2014_x86_64", "linux_x86_64"]
TRAINER_IMPORTS = {"trl", "datasets", "pyarrow", "bitsandbytes", "peft", "transformers", "accelerate", "torch"}


def test_gpu_requirements_resolve_with_vllm_and_the_trainer(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report",
           str(report), "--python-version", "3.12", "--only-binary=:all:", "--target", str(tmp_path / "target"),
           *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
           f"vllm=={versions.VLLM_VERSION}", "-r", str(REQUIREMENTS)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the GPU requirements do not resolve:\n{done.stderr[-3000:]}"
    resolved = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert resolved["vllm"] == versions.VLLM_VERSION
    assert TRAINER_IMPORTS <= set(resolved), sorted(TRAINER_IMPORTS - set(resolved))
    print("\nresolved: " + ", ".join(f"{name} {resolved[name]}" for name in sorted(TRAINER_IMPORTS | {"vllm"})))
