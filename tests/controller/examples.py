"""The Workspaces among examples/**/*.yaml (a file may also hold the ConfigMaps and Secrets its pod reads)."""

from __future__ import annotations

from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def workspace_examples() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        workspaces = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Workspace"]
        assert len(workspaces) == 1, f"{path} holds {len(workspaces)} Workspaces"
        found.append((path, workspaces[0]))
    return found
