"""`kaito serve [PRESET] ...` and `python -m runtime.inference ...`: run the inference server.

Standard library only at module level (the `kaito` CLI imports this to build its parser).
"""

from __future__ import annotations

import argparse

from runtime.inference.flags import FLAGS, add_arguments


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="serve a preset: Kaito's /chat and the OpenAI API on port 5000",
                       description="Settings: flags > environment (KAITO_<SETTING>) > --config YAML > preset.")
    add_arguments(p)
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from runtime.command import CommandError
    from runtime.inference.settings import SettingsError, resolve_settings

    flags = {dest: getattr(args, dest) for _, dest, _, _ in FLAGS}
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
    from runtime.command import run_command

    parser = argparse.ArgumentParser(prog="python -m runtime.inference", description=(
        "Serve a preset: Kaito's /chat and the OpenAI API. Settings: flags > environment (KAITO_<SETTING>) > "
        "--config YAML > preset."))
    add_arguments(parser)
    return run_command(serve, parser.parse_args(argv))
