"""The server's command-line flags, shared by `kaito serve` (cli.py) and the vLLM entry point (vllm_backend.py).

Standard library only: the `kaito` CLI builds its parser from these without importing a server.
"""

from __future__ import annotations

import argparse

from runtime.kaito import ADAPTERS_DIR, INFERENCE_PORT

FLAGS = (
    # flag, settings field, type, help
    ("--model-path", "model_path", str, "weights folder (default: the preset's)"),
    ("--served-model-name", "served_model_name", str, "name clients use in `model` (default: the preset name)"),
    ("--host", "host", str, "address to bind (default 0.0.0.0)"),
    ("--port", "port", int, f"port (default {INFERENCE_PORT})"),
    ("--adapters-dir", "adapters_dir", str, f"LoRA adapters folder, one sub-folder per adapter (default {ADAPTERS_DIR})"),
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
    ("--max-request-body-bytes", "max_request_body_bytes", int, "larger request bodies get 413 (default 4 MiB)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", nargs="?", default=None, help="preset name (default smollm2-135m-instruct)")
    parser.add_argument("--config", default=None, help="YAML file of settings (keys = flag names)")
    for flag, dest, kind, text in FLAGS:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    parser.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true", default=None,
                        help="allow model code from the weights folder (only if the preset needs it)")
