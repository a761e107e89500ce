"""`import presets` and the CLI's module graph stay free of heavy libraries."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


def test_import_presets_does_not_import_torch():
    loaded = _modules_after("import presets; presets.all_presets()")
    assert not {"torch", "transformers", "vllm", "peft"} & loaded
    # presets are the bottom layer: they import nothing from the runtime.
    assert not {m for m in loaded if m == "runtime" or m.startswith("runtime.")}


def test_cli_parser_does_not_import_torch():
    loaded = _modules_after("from runtime.cli import build_parser; build_parser()")
    assert not {"torch", "transformers", "vllm", "peft", "kubernetes"} & loaded
