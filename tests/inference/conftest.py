"""Servers shared by the inference tests: started once per session, stopped at the end."""

from __future__ import annotations

import pytest

from tests.inference.server import run_server


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir, tmp_path_factory):
    """The tiny random Llama served by `python -m runtime.inference tiny-llama`, no adapters."""
    empty = tmp_path_factory.mktemp("no-adapters")
    with run_server(["tiny-llama", "--adapters-dir", str(empty)], model="tiny-llama") as info:
        yield info
