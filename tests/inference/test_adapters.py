"""LoRA adapters on the tiny model: Kaito's /mnt/adapter layout, strengths, per-name serving, hot load/unload.

`france` (tests/support.py) makes the tiny random Llama answer FRANCE_ANSWER; `noise` is france with its lora_B
replaced by random values (a real adapter that wrecks the answer). Strengths: france=1, noise=0, so Kaito's
weighted combination (served by default, e.g. on /chat) must answer like france: if the 0 were ignored, the noise
would break it.
"""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.inference.server import run_server
from tests.registry import registry_fixture
from tests.support import FRANCE_ANSWER, FRANCE_QUESTION

pytestmark = pytest.mark.slow

registry = registry_fixture()

QUESTION = [{"role": "user", "content": FRANCE_QUESTION}]


def make_noise_adapter(src, dst):
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "adapter_model.safetensors")
    g = torch.Generator().manual_seed(0)
    noisy = {k: (torch.randn(v.shape, generator=g) * 0.5 if "lora_B" in k else v) for k, v in weights.items()}
    save_file(noisy, dst / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def adapter_server(france_adapter, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    shutil.copytree(france_adapter, root / "france")
    make_noise_adapter(france_adapter, root / "noise")
    (root / "not-an-adapter").mkdir()
    with run_server(["tiny-llama", "--adapters-dir", str(root)], model="tiny-llama",
                    env={"france": "1.0", "noise": "0"}) as info:
        yield info


def answer(server, model: str | None, max_tokens: int = 12) -> str:
    body = {"messages": QUESTION, "max_tokens": max_tokens, "temperature": 0}
    if model:
        body["model"] = model
    r = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_models_list_adapters_with_parent(adapter_server):
    data = httpx.get(adapter_server.base_url + "/v1/models").json()["data"]
    parents = {m["id"]: m["parent"] for m in data}
    assert parents == {"tiny-llama": None, "france": "tiny-llama", "noise": "tiny-llama",
                       "combined_adapter": "tiny-llama"}


def test_adapter_answers_under_its_name_only(adapter_server):
    assert answer(adapter_server, "france") == FRANCE_ANSWER
    assert answer(adapter_server, "tiny-llama") != FRANCE_ANSWER
    assert answer(adapter_server, "noise") != FRANCE_ANSWER


def test_weighted_combination_is_the_default(adapter_server):
    # no model: the default, Kaito's combined adapter (france*1 + noise*0)
    assert answer(adapter_server, None) == FRANCE_ANSWER
    r = httpx.post(adapter_server.base_url + "/chat", timeout=60, json={
        "messages": QUESTION, "generate_kwargs": {"do_sample": False, "max_new_tokens": 12}})
    assert r.json()["Result"] == FRANCE_ANSWER


def test_mixed_concurrent_traffic_gets_the_right_weights(adapter_server):
    models = ["france", "tiny-llama", "france", "noise", "tiny-llama", "france"] * 2
    expected = {m: answer(adapter_server, m) for m in set(models)}
    with ThreadPoolExecutor(len(models)) as pool:
        got = list(pool.map(lambda m: answer(adapter_server, m), models))
    assert got == [expected[m] for m in models]


def test_hot_load_and_unload(adapter_server, france_adapter):
    s = adapter_server
    r = httpx.post(s.base_url + "/v1/load_lora_adapter", json={"lora_name": "paris", "lora_path": str(france_adapter)},
                   timeout=60)
    assert r.status_code == 200, r.text
    assert "paris" in [m["id"] for m in httpx.get(s.base_url + "/v1/models").json()["data"]]
    assert answer(s, "paris") == FRANCE_ANSWER
    assert answer(s, "tiny-llama") != FRANCE_ANSWER
    again = httpx.post(s.base_url + "/v1/load_lora_adapter", json={"lora_name": "paris", "lora_path": "/nowhere"})
    assert again.status_code == 400
    r = httpx.post(s.base_url + "/v1/unload_lora_adapter", json={"lora_name": "paris"}, timeout=60)
    assert r.status_code == 200, r.text
    assert "paris" not in [m["id"] for m in httpx.get(s.base_url + "/v1/models").json()["data"]]
    gone = httpx.post(s.base_url + "/v1/chat/completions", json={"model": "paris", "messages": QUESTION})
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "model"
    assert answer(s, "france") == FRANCE_ANSWER  # the others are untouched


def test_load_rejects_bad_paths(adapter_server, tmp_path):
    r = httpx.post(adapter_server.base_url + "/v1/load_lora_adapter",
                   json={"lora_name": "empty", "lora_path": str(tmp_path)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_path"
    r = httpx.post(adapter_server.base_url + "/v1/unload_lora_adapter", json={"lora_name": "never-loaded"})
    assert r.status_code == 404


@pytest.mark.parametrize("change", [{"target_modules": ["no_such_module"]}, {"r": 4}])
def test_an_adapter_that_does_not_fit_the_model_is_400_and_changes_nothing(adapter_server, france_adapter, tmp_path,
                                                                           change):
    """Its folder is well-formed, but peft cannot load it into this model (modules it lacks, shapes that differ)."""
    s = adapter_server
    before = {model: answer(s, model) for model in ("tiny-llama", "france")}
    misfit = tmp_path / "misfit"
    shutil.copytree(france_adapter, misfit)
    config = json.loads((misfit / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**config, **change}))
    r = httpx.post(s.base_url + "/v1/load_lora_adapter", json={"lora_name": "misfit", "lora_path": str(misfit)},
                   timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_path", r.text
    assert "cannot be loaded into tiny-llama" in r.json()["error"]["message"]
    assert "misfit" not in [m["id"] for m in httpx.get(s.base_url + "/v1/models").json()["data"]]
    assert {model: answer(s, model) for model in before} == before
    assert httpx.get(s.base_url + "/health").status_code == 200


@pytest.mark.registry
def test_hot_load_from_an_oci_registry(adapter_server, registry, france_adapter):
    """issue 6's path: an adapter image pushed to a real registry (docker-registry on loopback), hot-loaded by
    `oci://` reference, served under its name, then unloaded."""
    from runtime.adapters.oci import push_adapter

    ref = registry.ref("adapters/france", "v1")
    push_adapter(france_adapter, ref)
    s = adapter_server
    r = httpx.post(s.base_url + "/v1/load_lora_adapter", timeout=120,
                   json={"lora_name": "from-oci", "lora_path": f"oci://{ref}"})
    assert r.status_code == 200, r.text
    assert answer(s, "from-oci") == FRANCE_ANSWER
    missing = httpx.post(s.base_url + "/v1/load_lora_adapter", timeout=120,
                         json={"lora_name": "nope", "lora_path": f"oci://{registry.ref('adapters/absent', 'v1')}"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "lora_path"
    assert httpx.post(s.base_url + "/v1/unload_lora_adapter", json={"lora_name": "from-oci"}).status_code == 200
