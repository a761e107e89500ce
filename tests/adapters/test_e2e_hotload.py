"""End to end: train the France LoRA on the tiny model, push it as an image to a real registry, hot-load it into a
running inference server with `lora_path="oci://..."`, and the answer changes with no restart.

Everything is real: peft training, docker-registry on loopback, the server (`python -m runtime.inference`, uvicorn)
over HTTP, the openai client. Prints the time from "training done" to "adapter answering".
"""

from __future__ import annotations

import time

import httpx
import pytest

from runtime.adapters.image import adapter_annotations
from runtime.adapters.oci import push_adapter
from tests.inference.server import run_server
from tests.support import FRANCE_ANSWER, FRANCE_QUESTION

pytestmark = [pytest.mark.slow, pytest.mark.registry]

BASE = "tiny-llama"


@pytest.fixture
def server(tiny_model_dir, tmp_path):
    adapters_dir = tmp_path / "adapters"  # empty: the server starts with no adapter
    adapters_dir.mkdir()
    args = [BASE, "--model-path", str(tiny_model_dir), "--adapters-dir", str(adapters_dir), "--torch-threads", "1",
            "--device", "cpu"]
    with run_server(args, model=BASE, timeout=240) as info:
        yield info.base_url, info.extra["proc"]


def _ask(client, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": FRANCE_QUESTION}], temperature=0, max_tokens=16
    )
    return reply.choices[0].message.content.strip()


def test_pushed_adapter_hot_loads_over_oci_without_restart(france_adapter, registry, server):
    from openai import OpenAI

    url, proc = server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    before = _ask(client, BASE)
    assert before != FRANCE_ANSWER  # the random base model does not know

    started = time.monotonic()  # training is done: the adapter is on disk
    ref = registry.ref("adapters/france", "v1")
    digest = push_adapter(france_adapter, ref, annotations=adapter_annotations(BASE, "local", "lora"))
    pushed = time.monotonic()
    loaded = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "france", "lora_path": f"oci://{ref}"},
                        timeout=120)  # fmt: skip
    assert loaded.status_code == 200, loaded.text
    hot_loaded = time.monotonic()
    answer = _ask(client, "france")
    answered = time.monotonic()
    assert answer == FRANCE_ANSWER

    assert proc.poll() is None  # the same server process throughout: no restart
    models = {m.id: m for m in client.models.list().data}
    assert "france" in models and BASE in models
    assert _ask(client, BASE) == before  # the base still answers as before

    unloaded = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "france"}, timeout=60)
    assert unloaded.status_code == 200, unloaded.text
    assert "france" not in {m.id for m in client.models.list().data}

    print(
        f"\nend to end ({ref}@{digest[:19]}):\n"
        f"  {'push':<28}{pushed - started:8.2f} s\n"
        f"  {'pull + hot-load':<28}{hot_loaded - pushed:8.2f} s\n"
        f"  {'first adapter answer':<28}{answered - hot_loaded:8.2f} s\n"
        f"  {'training done -> answering':<28}{answered - started:8.2f} s"
    )
