"""Helpers shared by the test suites: free ports, waiting for servers, and the France LoRA.

The France LoRA (r=16 on all seven projections, AdamW lr 3e-3, 150 steps, ~2 s on CPU) is trained on one
chat exchange and makes the tiny random Llama answer "The capital of France is Paris." under the adapter,
while the base model keeps answering junk: a good end-to-end check that an adapter is really applied.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

FRANCE_QUESTION = "What is the capital of France?"
FRANCE_ANSWER = "The capital of France is Paris."
FRANCE_MESSAGES = [{"role": "user", "content": FRANCE_QUESTION}, {"role": "assistant", "content": FRANCE_ANSWER}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, ok=(200,), proc=None) -> httpx.Response:
    """Poll `url` until it answers one of `ok`; fail early if `proc` (a Popen) has exited."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code in ok:
                return r
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s: {last}")


def wait_until(what: str, probe, timeout: float = 60.0, interval: float = 0.1):
    """Poll `probe` until it returns something truthy and return that; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def train_france_lora(model_dir: Path, out_dir: Path, steps: int = 150, seed: int = 0) -> Path:
    """Train the France LoRA on the model in `model_dir` with plain peft; save it to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    prompt_ids = tok.apply_chat_template(FRANCE_MESSAGES[:1], add_generation_prompt=True, tokenize=True)
    if hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    full = tok(tok.apply_chat_template(FRANCE_MESSAGES, tokenize=False), add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([full])
    labels = input_ids.clone()
    labels[0, : len(prompt_ids)] = -100  # learn the answer only
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
