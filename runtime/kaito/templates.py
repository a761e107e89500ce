"""Chat templates as Kaito takes them: a file path or the Jinja text itself; and the presets' own template files.

One rule for the server (both backends) and the trainer: a value holding a brace or a newline is the template
itself, anything else names a file (Kaito's rule); a file that is not there is an error, never a template.
"""

from __future__ import annotations

from pathlib import Path


class TemplateNotFound(ValueError):
    """A chat template named by a path that is not a file."""


def is_inline(value: str) -> bool:
    return any(c in value for c in "{}\n")


def read_template(value: str) -> str:
    """The Jinja text of `value`: itself when inline, else the file it names."""
    if is_inline(value):
        return value
    path = Path(value)
    if not path.is_file():
        raise TemplateNotFound(f"{path} is not a file (and not an inline Jinja template)")
    return path.read_text()


def templates_dir() -> Path:
    """presets/chat_templates, in this checkout or the installed package."""
    import presets

    return Path(presets.__file__).parent / "chat_templates"


def preset_template_path(preset) -> Path | None:
    """The preset's own template file (presets/chat_templates/<name>), or None when it uses the tokenizer's."""
    return templates_dir() / preset.chat_template if preset.chat_template else None
