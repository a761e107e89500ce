"""What an adapter folder holds (Kaito's /mnt/adapter/<name>/ layout), checked without torch: one rule for both
serving backends, at start-up (`adapter_folders`) and on a hot load (`check_adapter_folder`).

A sub-folder with an adapter_config.json is an adapter; it must hold a LoRA config (peft_type LORA, a positive
rank r) and a safetensors file with tensors (never pickle weights), or it is an error naming the file and the
reason: at start-up the server refuses to start, on a hot load the request gets a 400. A bad folder never
reaches peft or vLLM.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from runtime.kaito import ADAPTER_FILES

CONFIG_FILE, WEIGHTS_FILE = ADAPTER_FILES
# A safetensors file starts with the little-endian length of its JSON header; a real header is far below this.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class AdapterFolderError(ValueError):
    """The folder is not a loadable LoRA adapter; the message says why."""


def check_adapter_folder(path: str | Path) -> dict[str, Any]:
    """The adapter's config, once the folder holds a LoRA config and a readable safetensors file."""
    folder = Path(path)
    try:
        if not folder.is_dir():
            raise AdapterFolderError(f"{folder} is not a folder")
        missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
        if missing:
            raise AdapterFolderError(f"{folder} lacks {', '.join(missing)} (an adapter needs "
                                     f"{' and '.join(ADAPTER_FILES)})")
        config_text = (folder / CONFIG_FILE).read_bytes()
        with (folder / WEIGHTS_FILE).open("rb") as weights:
            head = weights.read(8)
            header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            header = weights.read(header_len) if header_len and header_len <= MAX_SAFETENSORS_HEADER else b""
    except OSError as err:  # a name too long, no permission, a loop of links...
        raise AdapterFolderError(f"cannot read {folder}: {err.strerror or err}") from None
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    try:
        config = json.loads(config_text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterFolderError(f"{config_path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise AdapterFolderError(f"{config_path} must be a JSON object, got {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise AdapterFolderError(f"{config_path}: field peft_type must be \"LORA\", got {config.get('peft_type')!r}")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise AdapterFolderError(f"{config_path}: field r (the LoRA rank) must be a positive integer, got {rank!r}")
    try:
        tensors = json.loads(header) if header_len is not None and len(header) == header_len else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        tensors = None
    if not isinstance(tensors, dict) or not any(key != "__metadata__" for key in tensors):
        raise AdapterFolderError(f"{weights_path} is not a safetensors file with tensors")
    return config


def adapter_folders(root: str | Path | None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every adapter under `root` (Kaito's /mnt/adapter), by name, with its config; sorted by name.

    A missing root means no adapters (the usual case without a Workspace `adapters:` list); a sub-folder without
    an adapter_config.json is not an adapter (lost+found, a half-pulled image); any other bad sub-folder raises.
    """
    if root is None or not Path(root).is_dir():
        return {}
    found = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if (folder / CONFIG_FILE).is_file():
            found[folder.name] = (folder.resolve(), check_adapter_folder(folder))
    return found
