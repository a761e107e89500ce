"""Our chat templates, rendered the way transformers renders them (a sandboxed jinja2 environment with
trim_blocks/lstrip_blocks and `raise_exception`), on a multi-turn conversation."""

from __future__ import annotations

from pathlib import Path

import pytest

import presets

TEMPLATES = Path(presets.__file__).parent / "chat_templates"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi?"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is the capital of France?"},
]


def render(name: str, messages, add_generation_prompt=True, **tokens) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    template = env.from_string((TEMPLATES / name).read_text())
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)


def test_every_template_is_used_or_documented():
    used = {p.chat_template for p in presets.all_presets() if p.chat_template}
    shipped = {f.name for f in TEMPLATES.glob("*.jinja")}
    assert used <= shipped
    assert shipped == {"falcon-instruct.jinja", "mistral-instruct.jinja", "llama-3-instruct.jinja", "phi-3.jinja"}


def test_falcon_instruct():
    out = render("falcon-instruct.jinja", CHAT, eos_token="<|endoftext|>")
    assert out == ("Be brief.\n\nUser: Hi?\nFalcon: Hello.<|endoftext|>\n"
                   "User: What is the capital of France?\nFalcon:")
    with pytest.raises(ValueError, match="role must be"):
        render("falcon-instruct.jinja", [{"role": "tool", "content": "x"}])


def test_mistral_instruct_merges_system_and_requires_alternation():
    out = render("mistral-instruct.jinja", CHAT, bos_token="<s>", eos_token="</s>")
    assert out == "<s>[INST] Be brief.\n\nHi? [/INST] Hello.</s>[INST] What is the capital of France? [/INST]"
    with pytest.raises(ValueError, match="alternate"):
        render("mistral-instruct.jinja", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_llama_3_instruct():
    out = render("llama-3-instruct.jinja", CHAT[1:2], bos_token="<|begin_of_text|>")
    assert out == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi?<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert not render("llama-3-instruct.jinja", CHAT, add_generation_prompt=False).endswith("\n\n")


def test_phi_3_keeps_the_system_message():
    out = render("phi-3.jinja", CHAT)
    assert out.startswith("<|system|>\nBe brief.<|end|>\n<|user|>\nHi?<|end|>\n<|assistant|>\nHello.<|end|>\n")
    assert out.endswith("<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n")
