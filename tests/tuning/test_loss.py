"""The chunked loss equals transformers' own causal-LM loss, in value and in gradients (tiny Llama + LoRA)."""

from __future__ import annotations

import pytest

from runtime.tuning.loss import chunked_causal_lm_loss, supports_chunked_loss


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False  # as in training; with a cache, transformers does not split packed documents
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_loss_matches_model_loss(lora_model, packed):
    import torch

    torch.manual_seed(1)
    ids = torch.randint(10, 4000, (1, 300))
    labels = ids.clone()
    labels[0, :40] = -100  # a prompt
    inputs = {"input_ids": ids, "labels": labels}
    if packed:  # three documents in one row, as TRL's padding-free collator makes them
        inputs["position_ids"] = torch.cat([torch.arange(100)] * 3).unsqueeze(0)
        labels[0, [100, 200]] = -100
    else:
        inputs["attention_mask"] = torch.ones_like(ids)
    assert supports_chunked_loss(lora_model)

    reference = lora_model(**inputs).loss
    reference.backward()
    expected = _grads(lora_model)
    lora_model.zero_grad()
    loss = chunked_causal_lm_loss(lora_model, inputs, chunk=64)
    loss.backward()
    got = _grads(lora_model)
    lora_model.zero_grad()

    assert torch.allclose(loss, reference, atol=1e-5, rtol=1e-5)
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6, rtol=1e-4), name
    n = int((labels[0, 1:] != -100).sum())
    by_count = chunked_causal_lm_loss(lora_model, inputs, num_items_in_batch=2 * n)  # summed, then / given count
    assert torch.allclose(by_count, reference.detach() / 2, atol=1e-5)
