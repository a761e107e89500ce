"""Data: every file type and row format normalised to chats, bad rows, and URLs over a real loopback server."""

from __future__ import annotations

import hashlib
import logging

import pytest

from runtime.tuning.config import DatasetConfigSection
from runtime.tuning.data import DataError, prepare
from runtime.tuning.fetch import DownloadError, download
from tests.tuning.helpers import QA, FileServer, rows, write

FORMATS = ["messages", "prompt_completion", "text", "alpaca", "dolly", "sharegpt"]
SUFFIXES = [".jsonl", ".json", ".csv", ".parquet", ".arrow"]


def _prepare(tmp_path, sources, **cfg):
    return prepare(sources, DatasetConfigSection(**cfg), data_dir=tmp_path / "dl", root=tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_row_format_becomes_chats(tmp_path, fmt):
    path = write(tmp_path / f"{fmt}.jsonl", rows(fmt, 6))
    data = _prepare(tmp_path, [str(path)], shuffle_dataset=False)
    assert data.formats == {fmt: 6} and data.bad_rows == 0
    chats = data.train["messages"]
    assert len(chats) == 6
    for chat, (question, answer) in zip(chats, QA, strict=False):
        assert chat[-1] == {"role": "assistant", "content": answer if fmt != "text" else f"{question} {answer}"}
        if fmt != "text":
            assert chat[0]["role"] == "user" and chat[0]["content"].startswith(question)


def test_alpaca_input_and_dolly_context_join_the_prompt(tmp_path):
    alpaca = _prepare(tmp_path, [str(write(tmp_path / "a.jsonl", rows("alpaca", 2)))], shuffle_dataset=False)
    assert alpaca.train["messages"][1][0]["content"] == f"{QA[1][0]}\n\nAnswer briefly."
    dolly = _prepare(tmp_path, [str(write(tmp_path / "d.jsonl", rows("dolly", 2)))], shuffle_dataset=False)
    assert dolly.train["messages"][1][0]["content"] == f"{QA[1][0]}\n\nGeography."


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_each_file_type(tmp_path, suffix):
    fmt = "prompt_completion" if suffix == ".csv" else "messages"  # CSV cells are flat strings
    path = write(tmp_path / f"data{suffix}", rows(fmt, 5))
    data = _prepare(tmp_path, [str(path)])
    assert len(data.train) == 5 and data.formats == {fmt: 5}
    assert data.digest == hashlib.sha256(hashlib.sha256(path.read_bytes()).hexdigest().encode()).hexdigest()


def test_folder_with_mixed_files_and_split(tmp_path):
    write(tmp_path / "d" / "a.parquet", rows("messages", 10))
    write(tmp_path / "d" / "b.jsonl", rows("sharegpt", 10))
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    data = _prepare(tmp_path, ["d"], train_test_split=0.8)  # relative: under the root
    assert data.formats == {"messages": 10, "sharegpt": 10}
    assert (len(data.train), len(data.eval)) == (16, 4)


def test_messages_column_and_context_response_columns(tmp_path):
    path = write(tmp_path / "x.jsonl", [{"conv": r["messages"]} for r in rows("messages", 3)])
    assert len(_prepare(tmp_path, [str(path)], messages_column="conv").train) == 3
    pair = write(tmp_path / "y.jsonl", [{"q": q, "a": a} for q, a in QA])
    data = _prepare(tmp_path, [str(pair)], context_column="q", response_column="a", shuffle_dataset=False)
    assert data.train["messages"][0] == [{"role": "user", "content": QA[0][0]},
                                         {"role": "assistant", "content": QA[0][1]}]


def test_bad_rows_are_counted_and_reported(tmp_path, caplog):
    good = rows("messages", 38)
    bad = [{"messages": [{"role": "user", "content": "no answer"}]},
           {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    path = write(tmp_path / "m.jsonl", good[:10] + bad + good[10:])
    with caplog.at_level(logging.WARNING):
        data = _prepare(tmp_path, [str(path)])
    assert (data.rows, data.bad_rows, len(data.train)) == (40, 2, 38)
    assert [(b["row"], b["reason"]) for b in data.bad_examples] == [
        (10, "no non-empty assistant message"),
        (11, "messages[0].role is 'robot'; expected one of ['assistant', 'system', 'tool', 'user']"),
    ]
    assert "dropped 2 of 40 rows" in caplog.text


def test_too_many_bad_rows_is_fatal_and_names_rows(tmp_path):
    data = rows("alpaca", 6) + [{"instruction": "q", "input": "", "output": None}] * 4
    path = write(tmp_path / "a.jsonl", data)
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, [str(path)])
    assert "4 of 10 rows are bad" in str(err.value) and "max_bad_rows_fraction" in str(err.value)
    assert "row 6: output is missing" in str(err.value)
    assert len(_prepare(tmp_path, [str(path)], max_bad_rows_fraction=0.5).train) == 6  # configurable


def test_unknown_columns_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"cannot tell the data format from the columns \['a', 'b'\]"):
        _prepare(tmp_path, [str(write(tmp_path / "x.jsonl", [{"a": 1, "b": 2}]))])
    with pytest.raises(DataError, match="does not exist"):
        _prepare(tmp_path, [str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataError, match="unknown file type '.xml'"):
        _prepare(tmp_path, [str(tmp_path / "x.xml")])
    with pytest.raises(DataError, match="messages_column 'conv' is not a column"):
        _prepare(tmp_path, [str(write(tmp_path / "y.jsonl", rows("messages", 2)))], messages_column="conv")


def test_url_dataset_over_http(tmp_path, caplog):
    served = write(tmp_path / "srv" / "dolly.parquet", rows("dolly", 8))
    with FileServer(tmp_path / "srv") as srv, caplog.at_level(logging.INFO):
        data = _prepare(tmp_path, [f"{srv.url}/dolly.parquet?sig=SECRET#frag"])
    assert data.formats == {"dolly": 8}
    local = tmp_path / "dl" / "dolly.parquet"
    assert local.read_bytes() == served.read_bytes()
    assert f"sha256={hashlib.sha256(served.read_bytes()).hexdigest()}" in caplog.text
    assert "SECRET" not in caplog.text  # query strings (SAS tokens) never reach the logs


def test_download_resumes_with_range_after_a_cut(tmp_path):
    body = write(tmp_path / "srv" / "big.jsonl", rows("messages", 400)).read_bytes()
    with FileServer(tmp_path / "srv", cut_first=True) as srv:
        path = download(f"{srv.url}/big.jsonl", tmp_path / "dl", max_bytes=10**8, backoff_s=0.01)
        requests = list(srv.handler.requests)
    assert path.read_bytes() == body
    assert requests[0]["range"] is None
    assert requests[1]["range"] == f"bytes={len(body) // 2}-"  # continued, not restarted


def test_download_limits_and_errors(tmp_path):
    write(tmp_path / "srv" / "d.jsonl", rows("messages", 50))
    with FileServer(tmp_path / "srv") as srv:
        with pytest.raises(DownloadError, match="is 6923 bytes, over the limit of 100 "):
            download(f"{srv.url}/d.jsonl", tmp_path / "dl", max_bytes=100)
        assert not list((tmp_path / "dl").iterdir())  # no partial left behind
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(f"{srv.url}/missing.jsonl", tmp_path / "dl", max_bytes=10**6)
    with pytest.raises(DownloadError, match="failed after 2 attempts"):
        download(f"{srv.url}/d.jsonl", tmp_path / "dl", max_bytes=10**6, retries=1, backoff_s=0.01)


def test_numbers_and_booleans_where_text_is_expected_are_their_text(tmp_path):
    """A new user's CSV whose answer column holds numbers was rejected row by row ("output is int, not text")."""
    csv_path = tmp_path / "sums.csv"
    csv_path.write_text("instruction,input,output\nWhat is 2+2?,,4\nWhat is 6+6?,,12\nHalf of 25?,,12.50\n"
                        "Is water wet?,,TRUE\n")
    data = _prepare(tmp_path, [str(csv_path)])
    assert data.bad_rows == 0
    answers = [m[-1]["content"] for m in data.train["messages"]]
    assert sorted(answers) == ["12", "12.50", "4", "TRUE"]  # as the file wrote them, not as pandas guessed
    json_path = write(tmp_path / "mixed.jsonl", [{"prompt": "2+2?", "completion": 4},
                                                 {"prompt": 7, "completion": True},
                                                 {"prompt": "Half of 25?", "completion": 12.5}])
    data = _prepare(tmp_path, [str(json_path)])
    assert data.bad_rows == 0
    chats = sorted((m[0]["content"], m[1]["content"]) for m in data.train["messages"])
    assert chats == [("2+2?", "4"), ("7", "true"), ("Half of 25?", "12.5")]
