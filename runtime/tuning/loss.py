"""Causal-LM loss in chunks of tokens, so a step never holds the full (tokens x vocabulary) logits.

The model's own loss materialises float32 logits for every token (512 tokens x 49k vocabulary: 100 MB, times
three with log-softmax and its gradient), which dominated peak memory of packed rows on CPU. Here the backbone
runs once, then the LM head and cross-entropy run per chunk under activation checkpointing: one chunk's logits
live at a time, recomputed in backward. Same value as transformers' ForCausalLMLoss (sum over label tokens
divided by `num_items_in_batch`, else the mean). TRL's own tiled head does the same but also computes entropy and
accuracy, which made CPU steps ~55% slower.

Only for architectures whose logits are exactly `lm_head(hidden)` (no soft-capping or scaling); others fall
back to the model's loss.
"""

from __future__ import annotations

PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3"})
CHUNK_TOKENS = 128


def supports_chunked_loss(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES


def chunked_causal_lm_loss(model, inputs: dict, num_items_in_batch=None, chunk: int = CHUNK_TOKENS):
    """The next-token cross-entropy of `inputs` (with `labels`), computed chunk by chunk."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    hidden = base.get_decoder()(**forward, use_cache=False).last_hidden_state
    head = base.get_output_embeddings()
    targets = F.pad(labels, (0, 1), value=-100)[..., 1:]  # token t predicts label t+1, as transformers shifts

    def chunk_loss(h, y):
        logits = head(h).float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-100,
                               reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(1), chunk):
        y = targets[:, start:start + chunk]
        if (y != -100).any():
            total = total + checkpoint(chunk_loss, hidden[:, start:start + chunk], y, use_reentrant=False)
    if num_items_in_batch is None:
        num_items_in_batch = (targets != -100).sum()
    return total / torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
