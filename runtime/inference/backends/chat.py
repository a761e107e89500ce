"""A chat turned into prompt tokens by the model's template, for every backend (torch-free; jinja2 at call time)."""

from __future__ import annotations

from runtime.inference.errors import BadRequest


def chat_prompt_ids(tokenizer, messages: list[dict], chat_template: str | None = None) -> list[int]:
    """The template applied with the assistant's generation prompt, tokenized; a template that refuses the
    messages (roles or orders it does not take) is a 400 naming `messages`."""
    from jinja2 import TemplateError

    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            chat_template=chat_template)
    except TemplateError as err:
        raise BadRequest(f"messages: the model's chat template refused them: {err}", param="messages") from None
    if hasattr(ids, "keys"):  # a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
