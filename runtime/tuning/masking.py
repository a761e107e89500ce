"""Tokenise chats with a mask of the assistant's tokens, so loss is on assistant tokens only.

Two ways, the same assistant tokens (the second also trains the newline after the end-of-turn token):
- the template has `{% generation %}` markers (our tiny model's does): transformers'
  `apply_chat_template(return_assistant_tokens_mask=True)`, the route TRL's `assistant_only_loss` takes;
- it has none (SmolLM2, most hub models; TRL then only patches a few templates it knows, else refuses): we render
  the chat prefix by prefix. An assistant turn is the text between `render(messages[:i], add_generation_prompt)`
  and `render(messages[:i+1])`, so its end-of-turn token is trained too (the model learns to stop); token
  offsets from the fast tokenizer map those character spans to tokens.
The output columns `input_ids` and `assistant_masks` are what TRL's SFTTrainer turns into labels (and packs).
"""

from __future__ import annotations

from typing import Any


class TemplateError(ValueError):
    """The chat template cannot be used to mask assistant tokens."""


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")


def _render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of its assistant turns (template without markers)."""
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1])
        if not full.startswith(upto) or not upto.startswith(head):
            raise TemplateError("the chat template does not render a chat as a prefix of its continuation, so "
                                "assistant turns cannot be located; set assistant_only_loss false in "
                                "TrainingArguments or give ModelConfig.chat_template")
        spans.append((len(head), len(upto)))
    return full, spans


def tokenize_chat(tokenizer, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """`input_ids` and `assistant_masks` (1 on assistant tokens) of one chat."""
    if has_generation_markers(tokenizer.chat_template):
        out: Any = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True)
        return {"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])}
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(lo <= start < hi for lo, hi in spans)) for start, _end in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


def tokenize_full(tokenizer, messages: list[dict[str, str]]) -> dict[str, list[int]]:
    """`input_ids` of one chat, every token trained (assistant_only_loss off)."""
    text = _render(tokenizer, messages)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"input_ids": list(ids), "assistant_masks": [1] * len(ids)}


def tokenize_dataset(dataset, tokenizer, assistant_only: bool = True):
    """Map a `messages` dataset to `input_ids` + `assistant_masks`."""
    fn = tokenize_chat if assistant_only else tokenize_full
    return dataset.map(lambda row: fn(tokenizer, row["messages"]), remove_columns=dataset.column_names,
                       desc="Tokenizing chats")
