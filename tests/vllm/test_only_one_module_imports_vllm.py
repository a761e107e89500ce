"""Issue 4: only runtime/inference/vllm_backend.py imports vLLM (so everything else runs without it)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMPORT = re.compile(r"^\s*(import vllm\b|from vllm[\s.])", re.MULTILINE)


def test_vllm_is_imported_by_the_backend_module_only():
    importers = sorted(
        str(path.relative_to(ROOT))
        for folder in ("runtime", "presets")
        for path in (ROOT / folder).rglob("*.py")
        if IMPORT.search(path.read_text(errors="replace"))
    )
    assert importers == ["runtime/inference/vllm_backend.py"]
