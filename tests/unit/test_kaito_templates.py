"""runtime.kaito.templates: one rule for a chat template given as a path or inline, on the server and the trainer."""

import pytest

import presets
from runtime.kaito.templates import TemplateNotFound, preset_template_path, read_template


def test_inline_text_is_the_template_and_anything_else_a_file(tmp_path):
    assert read_template("{{ messages }}") == "{{ messages }}"
    assert read_template("line one\nline two") == "line one\nline two"
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert read_template(str(path)) == path.read_text()
    with pytest.raises(TemplateNotFound, match="is not a file"):
        read_template(str(tmp_path / "missing.jinja"))  # never silently used as a template


def test_every_preset_template_file_exists():
    named = [p for p in presets.all_presets() if p.chat_template]
    assert named, "no preset names its own template"
    for preset in named:
        assert preset_template_path(preset).is_file(), preset.name
