"""`kaito serve [PRESET] ...` and `python -m runtime.inference ...`: run the inference server.

Standard library only at module level (the `kaito` CLI imports this to build its parser).
"""

from __future__ import annotations

import argparse

_FLAGS = (
    # flag, settings field, type, help
    ("--model-path", "model_path", str, "weights folder (default: the preset's)"),
    ("--served-model-name", "served_model_name", str, "name clients use in `model` (default: the preset name)"),
    ("--host", "host", str, "address to bind (default 0.0.0.0)"),
    ("--port", "port", int, "port (default 5000)"),
    ("--adapters-dir", "adapters_dir", str, "LoRA adapters folder, one sub-folder per adapter (default /mnt/adapter)"),
    ("--api-key", "api_key", str, "require `Authorization: Bearer KEY` (or set KAITO_API_KEY / API_KEY)"),
    ("--runtime", "runtime", str, "vllm or transformers (default: vllm where the preset prefers it and vLLM is installed)"),
    ("--dtype", "dtype", str, "auto|float32|bfloat16|float16 (default: the preset's)"),
    ("--device", "device", str, "auto|cpu|cuda"),
    ("--quantization", "quantization", str, "bnb-4bit: load the base in 4-bit NF4"),
    ("--max-model-len", "max_model_len", int, "context length (default: the model's)"),
    ("--max-batch-size", "max_batch_size", int, "requests decoded together (default 16)"),
    ("--max-queued-requests", "max_queued_requests", int, "waiting requests allowed before 429 (default 64)"),
    ("--num-blocks", "num_blocks", int, "KV-cache blocks"),
    ("--max-batch-tokens", "max_batch_tokens", int, "tokens per forward pass"),
    ("--page-size", "page_size", int, "tokens per KV-cache block (default 64)"),
    ("--default-max-tokens", "default_max_tokens", int, "max_tokens when a request gives none (default 256)"),
    ("--chat-template", "chat_template", str, "chat template file or inline Jinja"),
    ("--adapter-combination", "adapter_combination", str, "svd|cat|linear: how adapters are combined (Kaito: svd)"),
    ("--pipeline", "pipeline", str, "Kaito /chat mode: text-generation (prompt) or conversational (messages)"),
    ("--torch-threads", "torch_threads", int, "torch threads on CPU"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default=None, help="preset name (default smollm2-135m-instruct)")
    parser.add_argument("--config", default=None, help="YAML file of settings (keys = flag names)")
    for flag, dest, kind, text in _FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true", default=None,
                        help="allow model code from the weights folder (only if the preset needs it)")


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve a preset: Kaito's /chat and the OpenAI API on port 5000",
                       description="Settings: flags > environment (KAITO_<SETTING>) > --config YAML > preset.")
    add_arguments(p)
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from runtime.cli import CommandError
    from runtime.inference.settings import SettingsError, resolve_settings

    flags = {dest: getattr(args, dest) for _, dest, _, _ in _FLAGS}
    flags["preset"] = args.preset
    flags["trust_remote_code"] = args.trust_remote_code
    try:
        settings = resolve_settings(flags, config_file=args.config)
    except SettingsError as err:
        raise CommandError(str(err)) from None
    import presets

    try:
        presets.get(settings.preset)
    except presets.UnknownPreset as err:
        raise CommandError(f"preset: {err}") from None
    runtime = settings.runtime
    if "runtime" not in settings.model_fields_set:
        # Nobody chose: vLLM where the preset prefers it and vLLM is installed (Kaito's default), else transformers.
        from runtime.inference.vllm_select import runtime_for

        try:
            runtime = runtime_for(None, settings.preset)
        except ValueError as err:
            raise CommandError(str(err)) from None
    if runtime == "vllm":
        try:
            from runtime.inference import vllm_backend
        except ImportError as err:
            raise CommandError(f"runtime: vllm is not available here ({err})") from None
        return vllm_backend.serve_namespace(args)
    return run_server(settings)


def run_server(settings) -> int:
    """Start uvicorn with the app; the model loads in the background; exit 1 if loading fails or the engine stops
    later (so that Kubernetes restarts the pod)."""
    import logging

    import uvicorn

    from runtime.inference.app import build_app

    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(err: BaseException) -> None:
        failure.append(err)
        if server is not None:
            server.should_exit = True

    app = build_app(settings, on_fatal=on_fatal)
    shown_host = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{shown_host}:{settings.port}"
    auth = " -H 'Authorization: Bearer $KAITO_API_KEY'" if settings.api_key else ""
    question = '[{"role": "user", "content": "What is the capital of France?"}]'
    print(f"Serving {settings.resolved_name()} on {base} (loading the model; /health turns 200 when ready).\n"
          f"Try:\n  curl -s {base}/chat{auth} -d '{{\"messages\": {question}, "
          "\"generate_kwargs\": {\"do_sample\": false}}'\n"
          f"  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
          f"-d '{{\"model\": \"{settings.resolved_name()}\", \"temperature\": 0, \"messages\": {question}}}'",
          flush=True)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run()
    if failure:
        logging.getLogger(__name__).error("exiting: %s", failure[0])
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import logging
    import sys

    from runtime.cli import CommandError

    parser = argparse.ArgumentParser(prog="python -m runtime.inference", description=add_commands.__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(args)
    except CommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
