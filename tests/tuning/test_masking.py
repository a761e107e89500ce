"""Assistant-only loss: masks from {% generation %} markers (tiny) and from prefix rendering (SmolLM2, none)."""

from __future__ import annotations

import pytest

from runtime.tuning.masking import TemplateError, has_generation_markers, tokenize_chat, tokenize_full

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And Italy?"},
    {"role": "assistant", "content": "Rome."},
]


def _trained(tok, out) -> str:
    return tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_markers_template_masks_only_assistant_turns(tiny_tok):
    assert has_generation_markers(tiny_tok.chat_template)
    out = tokenize_chat(tiny_tok, CHAT)
    assert _trained(tiny_tok, out) == "The capital of France is Paris.<|im_end|>Rome.<|im_end|>"
    assert tiny_tok.decode(out["input_ids"]) == tiny_tok.apply_chat_template(CHAT, tokenize=False)


def test_prefix_rendering_matches_markers(tiny_tok):
    """The same tokenizer without its markers: the fallback finds the same assistant tokens (plus newlines)."""
    plain = tiny_tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    original = tiny_tok.chat_template
    try:
        tiny_tok.chat_template = plain
        assert not has_generation_markers(plain)
        out = tokenize_chat(tiny_tok, CHAT)
    finally:
        tiny_tok.chat_template = original
    marked = tokenize_chat(tiny_tok, CHAT)
    assert out["input_ids"] == marked["input_ids"]
    assert _trained(tiny_tok, out) == "The capital of France is Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert all(b >= a for a, b in zip(marked["assistant_masks"], out["assistant_masks"], strict=True))


def test_smollm2_template_without_markers(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert not has_generation_markers(tok.chat_template)
    out = tokenize_chat(tok, CHAT)
    assert _trained(tok, out) == "The capital of France is Paris.<|im_end|>\nRome.<|im_end|>\n"
    full = tokenize_full(tok, CHAT)
    assert full["input_ids"] == out["input_ids"] and all(full["assistant_masks"])


def test_template_that_is_not_prefix_stable_is_refused(tiny_tok):
    original = tiny_tok.chat_template
    try:  # renders the number of messages first: every prefix differs
        tiny_tok.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
        with pytest.raises(TemplateError, match="prefix"):
            tokenize_chat(tiny_tok, CHAT)
    finally:
        tiny_tok.chat_template = original
