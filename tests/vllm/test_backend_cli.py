"""The vLLM backend's command line and config file, up to the engine argv (`--print-args`): no vLLM needed."""

from __future__ import annotations

import pytest

from runtime.inference.vllm_backend import build_parser, resolve, serve_namespace


def run(argv, monkeypatch, env=None):
    for key in ("KAITO_MAX_QUEUED_REQUESTS", "KAITO_PORT", "API_KEY", "VLLM_API_KEY", "KAITO_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return resolve(build_parser().parse_args(argv))


def test_one_file_holds_server_settings_and_kaito_vllm_flags(tmp_path, monkeypatch, tiny_model_dir):
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("max_queued_requests: 7\nport: 6000\nmax_probe_steps: 6\n"
                   "vllm:\n  max-model-len: 1024\n  enable_prefix_caching: false\n")
    settings, preset, plan, vsettings, user = run(
        ["tiny-llama", "--config", str(cfg), "--port", "7000", "--model-path", str(tiny_model_dir)], monkeypatch,
        env={"KAITO_MAX_QUEUED_REQUESTS": "9"})
    assert settings.port == 7000  # flag > file
    assert settings.max_queued_requests == 9  # environment > file
    assert dict(user.vllm) == {"max-model-len": 1024, "enable-prefix-caching": False}
    assert preset.name == "tiny-llama" and vsettings.port == 7000


def test_print_args_shows_the_engine_argv_with_the_user_winning(tmp_path, monkeypatch, capsys, tiny_model_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vllm:\n  max-model-len: 1024\n")
    monkeypatch.delenv("API_KEY", raising=False)
    args = build_parser().parse_args(["tiny-llama", "--config", str(cfg), "--model-path", str(tiny_model_dir),
                                      "--max-batch-size", "8", "--tensor-parallel-size", "1", "--print-args",
                                      "--api-key", "s3cret-value"])
    assert serve_namespace(args) == 0
    argv = capsys.readouterr().out.split()
    assert argv[argv.index("--max-model-len") + 1] == "1024"
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert argv[argv.index("--model") + 1] == str(tiny_model_dir)
    assert argv[argv.index("--dtype") + 1] == "float32"  # the preset's vllm_params
    assert "s3cret-value" not in " ".join(argv)  # the key stays with our middleware, never on a command line


def test_print_args_takes_the_batch_size_from_the_environment_and_quotes_for_the_shell(
        monkeypatch, capsys, tiny_model_dir):
    import shlex

    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.setenv("KAITO_MAX_BATCH_SIZE", "3")
    args = build_parser().parse_args(["tiny-llama", "--model-path", str(tiny_model_dir), "--tensor-parallel-size",
                                      "1", "--chat-template", "{{ messages }}", "--print-args"])
    assert serve_namespace(args) == 0
    argv = shlex.split(capsys.readouterr().out)  # what benchmarks/gpu/vllm_compare.py does with it
    assert argv[argv.index("--max-num-seqs") + 1] == "3"
    assert argv[argv.index("--chat-template") + 1] == "{{ messages }}"


def test_bad_config_key_and_unsupported_runtime_fail_clearly(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_queud_requests: 7\n")
    with pytest.raises(SystemExit, match="unknown key.*max_queud_requests"):
        run(["tiny-llama", "--config", str(cfg)], monkeypatch)
    with pytest.raises(SystemExit, match="unknown preset 'nope'"):
        run(["nope"], monkeypatch)


def test_without_vllm_installed_the_error_says_how_to_get_it(monkeypatch, capsys, tiny_model_dir):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    monkeypatch.delenv("API_KEY", raising=False)
    args = build_parser().parse_args(["tiny-llama", "--model-path", str(tiny_model_dir)])
    assert serve_namespace(args) == 2
    assert "vLLM is not installed" in capsys.readouterr().err
