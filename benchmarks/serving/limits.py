"""What this machine can do without any server, in this process, on the same model and thread count: the limit the
servers are measured against.

- `greedy_stream`: one stream, a plain greedy decode loop (`model(...)` with its KV cache, argmax): TTFT (prefill
  plus the first token) and output tokens/s at concurrency 1.
- `padded_batch`: N prompts padded to one batch, decoded greedily together for `max_tokens` steps: output tokens/s
  at concurrency N (the naive batch every engine should beat or match).
"""

from __future__ import annotations

import time

from benchmarks.serving.load import PROMPTS


def _load(model_dir: str, threads: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return torch, tokenizer, model


def _decode(torch, model, inputs: dict, max_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, seconds for all max_tokens) of a greedy loop over a batch."""
    start = time.perf_counter()
    with torch.no_grad():
        mask = inputs["attention_mask"]
        out = model(**inputs, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        first = time.perf_counter() - start
        past = out.past_key_values
        for _ in range(max_tokens - 1):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
    return first, time.perf_counter() - start


def measure(model_dir: str, threads: int, levels: list[int], max_tokens: int, repeats: int = 3) -> dict:
    """The limit at each concurrency level: the median of `repeats` runs."""
    import statistics

    torch, tokenizer, model = _load(model_dir, threads)
    _decode(torch, model, tokenizer(["Hi"], return_tensors="pt"), 2)  # warm up
    out = {}
    for n in levels:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
        runs = [_decode(torch, model, tokenizer(prompts, return_tensors="pt", padding=True), max_tokens)
                for _ in range(repeats)]
        rates = [n * max_tokens / total for _, total in runs]
        out[n] = {"kind": "greedy_stream" if n == 1 else "padded_batch", "output_tok_s": statistics.median(rates),
                  "output_tok_s_min": min(rates), "output_tok_s_max": max(rates),
                  "ttft_s": statistics.median(first for first, _ in runs)}
    return out
