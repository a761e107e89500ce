"""A QLoRA adapter (trained on the 4-bit NF4 base, as the tuning runtime does) served on a 4-bit base
(`--quantization bnb-4bit`) and on a bfloat16 base."""

import httpx
import pytest

from tests.inference.server import run_server
from tests.support import FRANCE_ANSWER, FRANCE_MESSAGES, FRANCE_QUESTION

pytestmark = pytest.mark.slow


def train_qlora_france(model_dir, out_dir, steps: int = 150):
    """The France LoRA recipe of tests/support.py, on a bitsandbytes 4-bit base (QLoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=bnb, device_map="cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    prompt = tok.apply_chat_template(FRANCE_MESSAGES[:1], add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    full = tok(tok.apply_chat_template(FRANCE_MESSAGES, tokenize=False), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([full])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="module")
def qlora_adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    train_qlora_france(tiny_model_dir, root / "france-q")
    return root


def ask(server, model):
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": FRANCE_QUESTION}], "max_tokens": 12,
        "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_qlora_adapter_on_4bit_base(qlora_adapters):
    args = ["tiny-llama", "--adapters-dir", str(qlora_adapters), "--quantization", "bnb-4bit"]
    with run_server(args, model="tiny-llama") as s:
        assert ask(s, "france-q") == FRANCE_ANSWER
        assert ask(s, "tiny-llama") != FRANCE_ANSWER


def test_qlora_adapter_on_16bit_base(qlora_adapters):
    with run_server(["tiny-llama", "--adapters-dir", str(qlora_adapters), "--dtype", "bfloat16"], model="tiny-llama") as s:
        text = ask(s, "france-q")
        assert text == FRANCE_ANSWER, text
        assert ask(s, "tiny-llama") != FRANCE_ANSWER
