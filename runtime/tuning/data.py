"""Training data: find or download the files, read them with `datasets`, normalise every row to chat messages.

Recognised row formats (checked in this order, by the columns present):
- OpenAI `messages` (or `DatasetConfig.messages_column`): a list of {role, content};
- ShareGPT `conversations`: a list of {from, value} (human/gpt/system);
- `prompt` / `completion` (strings, or TRL's conversational lists);
- `DatasetConfig.context_column` / `response_column` pairs;
- alpaca `instruction` / `input` / `output`;
- dolly `instruction` / `context` / `response`;
- `text` (plain text: one assistant turn, so every token is trained).
Rows that do not fit are dropped, counted and reported (index and reason); the run fails only when their
share is over `DatasetConfig.max_bad_rows_fraction`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.tuning.config import DatasetConfigSection as DatasetConfig
from runtime.tuning.fetch import check_distinct_names, download, is_url, sha256_of

log = logging.getLogger(__name__)

EXTENSIONS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
REPORTED_BAD_ROWS = 20


class DataError(ValueError):
    """The training data cannot be used; the message says which file, column or rows and why."""


class BadRow(ValueError):
    """One row that cannot be turned into a chat."""


@dataclass
class PreparedData:
    """Normalised chats, and what happened on the way."""

    train: Any
    """datasets.Dataset with one column, `messages`."""
    eval: Any | None
    files: list[Path]
    digest: str
    """sha256 over the source files' digests, in order: identifies the data in the adapter's metadata."""
    rows: int
    bad_rows: int
    bad_examples: list[dict[str, Any]] = field(default_factory=list)
    """Up to 20 of {row, file, reason}."""
    formats: dict[str, int] = field(default_factory=dict)


def resolve_sources(sources: list[str], data_dir: Path, root: Path, cfg: DatasetConfig) -> list[Path]:
    """Local files for every source: URLs are downloaded into `data_dir`, folders expanded."""
    check_distinct_names([s for s in sources if is_url(s)])
    files: list[Path] = []
    for source in sources:
        if is_url(source):
            files.append(download(source, data_dir, max_bytes=cfg.max_download_bytes, retries=cfg.download_retries))
            continue
        path = Path(source)
        if not path.is_absolute():
            path = root / path
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _format_of(p, cfg) is not None)
            if not found:
                raise DataError(f"data folder {path} holds no {'/'.join(sorted(set(EXTENSIONS.values())))} files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"data source {source!r} does not exist (resolved to {path})")
    if not files:
        raise DataError("no training data: pass --data or set DatasetConfig.dataset_path")
    return files


def _format_of(path: Path, cfg: DatasetConfig) -> str | None:
    if cfg.dataset_extension:
        return EXTENSIONS.get("." + cfg.dataset_extension)
    return EXTENSIONS.get(path.suffix.lower())


def _read(path: Path, cfg: DatasetConfig):
    import datasets

    fmt = _format_of(path, cfg)
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(EXTENSIONS)} "
                        "or set DatasetConfig.dataset_extension")
    try:
        if fmt == "arrow":
            try:
                return datasets.Dataset.from_file(str(path))
            except Exception:  # an Arrow IPC stream rather than a file: let the builder read it
                pass
        if fmt == "csv":  # every cell as the file wrote it ("4", "12.50", "TRUE"), not as pandas would guess it
            with path.open(newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            strings = datasets.Features({name: datasets.Value("string") for name in header})
            return datasets.load_dataset("csv", data_files=str(path), split="train", features=strings)
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as err:
        raise DataError(f"{path}: cannot read as {fmt}: {type(err).__name__}: {err}") from None


# ---- row normalisation -------------------------------------------------------------------------------------


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):  # an empty cell
        raise BadRow(f"{what} is missing")
    if isinstance(value, (bool, int, float)):
        # An answer column of numbers (4, 12, ...) or booleans is text to a chat: as JSON writes it ("4", "true").
        return json.dumps(value)
    raise BadRow(f"{what} is {type(value).__name__}, not text")


def _check_chat(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise BadRow("no non-empty assistant message")
    return messages


def _from_messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRow("messages is a string that is not JSON") from None
    if not isinstance(value, list) or not value:
        raise BadRow("messages is not a non-empty list")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadRow(f"messages[{i}] is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise BadRow(f"messages[{i}].role is {role!r}; expected one of {sorted(ROLES)}")
        out.append({"role": role, "content": _text(m.get("content"), f"messages[{i}].content")})
    return _check_chat(out)


def _from_sharegpt(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRow("conversations is not a non-empty list")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise BadRow(f"conversations[{i}] is not an object")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise BadRow(f"conversations[{i}].from is {turn.get('from')!r}; expected human, gpt or system")
        out.append({"role": role, "content": _text(turn.get("value"), f"conversations[{i}].value")})
    return _check_chat(out)


def _pair(prompt: Any, answer: Any, prompt_name: str, answer_name: str) -> list[dict[str, str]]:
    if isinstance(prompt, list):  # TRL conversational prompt/completion
        head = _from_messages(prompt + [{"role": "assistant", "content": "x"}])[:-1]
    else:
        text = _text(prompt, prompt_name)
        if not text.strip():
            raise BadRow(f"{prompt_name} is empty")
        head = [{"role": "user", "content": text}]
    if isinstance(answer, list):
        tail = [{"role": m.get("role"), "content": m.get("content")} for m in answer if isinstance(m, dict)]
        return _from_messages(head + tail)
    return _check_chat(head + [{"role": "assistant", "content": _text(answer, answer_name)}])


def _instruction(row: dict, extra_col: str, answer_col: str) -> list[dict[str, str]]:
    instruction = _text(row.get("instruction"), "instruction")
    extra = row.get(extra_col) or ""
    prompt = f"{instruction}\n\n{_text(extra, extra_col)}" if extra else instruction
    return _pair(prompt, row.get(answer_col), "instruction", answer_col)


def _from_text(value: Any) -> list[dict[str, str]]:
    return _check_chat([{"role": "assistant", "content": _text(value, "text")}])


def detect_format(columns: set[str], cfg: DatasetConfig) -> tuple[str, Callable[[dict], list[dict[str, str]]]]:
    """The row format of a table with these columns, and the function that normalises one row."""
    messages_col = cfg.messages_column or "messages"
    if messages_col in columns:
        return "messages", lambda r: _from_messages(r[messages_col])
    if cfg.messages_column:
        raise DataError(f"DatasetConfig.messages_column {cfg.messages_column!r} is not a column; "
                        f"columns: {sorted(columns)}")
    if "conversations" in columns:
        return "sharegpt", lambda r: _from_sharegpt(r["conversations"])
    if {"prompt", "completion"} <= columns:
        return "prompt_completion", lambda r: _pair(r["prompt"], r["completion"], "prompt", "completion")
    if cfg.context_column:
        if {cfg.context_column, cfg.response_column} <= columns:
            c, a = cfg.context_column, cfg.response_column
            return "context_response", lambda r: _pair(r[c], r[a], c, a)
        raise DataError(f"DatasetConfig.context_column/response_column ({cfg.context_column!r}, "
                        f"{cfg.response_column!r}) are not both columns; columns: {sorted(columns)}")
    if {"instruction", "output"} <= columns:
        return "alpaca", lambda r: _instruction(r, "input", "output")
    if {"instruction", "response"} <= columns:
        return "dolly", lambda r: _instruction(r, "context", "response")
    if "text" in columns:
        return "text", lambda r: _from_text(r["text"])
    raise DataError(f"cannot tell the data format from the columns {sorted(columns)}: expected messages, "
                    "conversations, prompt+completion, instruction+output (alpaca), instruction+response (dolly) "
                    "or text")


def prepare(sources: list[str], cfg: DatasetConfig, *, data_dir: Path, root: Path) -> PreparedData:
    """Fetch, read and normalise `sources`; split into train and eval."""
    import datasets

    files = resolve_sources(sources, data_dir, root, cfg)
    chats: list[list[dict[str, str]]] = []
    bad: list[dict[str, Any]] = []
    bad_count = 0
    total = 0
    formats: Counter[str] = Counter()
    digest = hashlib.sha256()
    for path in files:
        file_digest = sha256_of(path)
        log.info("data file %s sha256=%s", path, file_digest)
        digest.update(file_digest.encode())
        table = _read(path, cfg)
        fmt, normalise = detect_format(set(table.column_names), cfg)
        formats[fmt] += len(table)
        for index, row in enumerate(table):
            total += 1
            try:
                chats.append(normalise(row))
            except BadRow as err:
                bad_count += 1
                if len(bad) < REPORTED_BAD_ROWS:
                    bad.append({"file": path.name, "row": index, "reason": str(err)})
    if bad_count:
        log.warning("dropped %d of %d rows that are not chats; first ones: %s", bad_count, total,
                    "; ".join(f"{b['file']} row {b['row']}: {b['reason']}" for b in bad[:5]))
    if total == 0 or not chats:
        raise DataError(f"no usable rows in {', '.join(str(f) for f in files)} ({bad_count} bad of {total})")
    if bad_count / total > cfg.max_bad_rows_fraction:
        details = "; ".join(f"{b['file']} row {b['row']}: {b['reason']}" for b in bad[:10])
        raise DataError(f"{bad_count} of {total} rows are bad ({bad_count / total:.1%}), over "
                        f"DatasetConfig.max_bad_rows_fraction={cfg.max_bad_rows_fraction}: {details}")
    table = datasets.Dataset.from_dict({"messages": chats})
    if cfg.shuffle_dataset:
        table = table.shuffle(seed=cfg.shuffle_seed)
    eval_table = None
    if cfg.train_test_split < 1.0 and len(table) > 1:
        split = table.train_test_split(train_size=cfg.train_test_split, seed=cfg.shuffle_seed, shuffle=False)
        table, eval_table = split["train"], split["test"]
    return PreparedData(train=table, eval=eval_table, files=files, digest=digest.hexdigest(), rows=total,
                        bad_rows=bad_count, bad_examples=bad, formats=dict(formats))
