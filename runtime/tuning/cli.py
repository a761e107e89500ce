"""`kaito tune` and `python -m runtime.tuning`: run a LoRA/QLoRA tuning job (standard library only at import)."""

from __future__ import annotations

import argparse
import os

from runtime.kaito import DATA_DIR, INFERENCE_PORT


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="preset name (default $KAITO_PRESET)")
    p.add_argument("--method", choices=("qlora", "lora"), help="default: qlora, or lora when the config file "
                   "switches quantization off")
    p.add_argument("--data", action="append", default=[], metavar="PATH|URL",
                   help="training data: file, folder or http(s) URL; repeat for several "
                   "(default DatasetConfig.dataset_path, else the first file under /mnt/data)")
    p.add_argument("--output-dir", help="where the adapter goes (default TrainingArguments.output_dir, else "
                   "/mnt/results)")
    p.add_argument("--config", help="training_config.yaml (default $YAML_FILE_PATH, else "
                   "/mnt/config/training_config.yaml when present, else Kaito's defaults)")
    p.add_argument("--model-path", default=os.environ.get("KAITO_MODEL_PATH") or None,
                   help="folder of the base weights (default $KAITO_MODEL_PATH, which preset images set to their "
                   "baked weights; local presets build theirs otherwise)")
    p.add_argument("--output-image", metavar="REF", help="push the adapter as an OCI image to REF when done")
    p.add_argument("--insecure-registry", action="store_true", help="plain-HTTP registry for --output-image")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--epochs", type=float, help="TrainingArguments.num_train_epochs")
    p.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                   help="pack several chats into each sequence")
    p.add_argument("--batch-size", type=int, help="per-device train batch size")
    p.add_argument("--max-length", type=int, help="longest sequence in tokens")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("KAITO_METRICS_PORT", INFERENCE_PORT)),
                   help=f"Prometheus metrics port while training (0 disables; default {INFERENCE_PORT})")
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="do not compare the sizing plan with the device's free memory")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints after a completed run")


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.command import CommandError
    from runtime.tuning.config import ConfigError
    from runtime.tuning.data import DataError
    from runtime.tuning.fetch import DownloadError, is_url
    from runtime.tuning.masking import TemplateError
    from runtime.tuning.trainer import TuneError, TuneOptions, run

    # Paths typed here are the user's, relative to the current directory (the config file's are under /mnt).
    data = [d if is_url(d) else str(Path(d).resolve()) for d in args.data]
    opts = TuneOptions(
        preset=args.preset, method=args.method, data=data, output_dir=args.output_dir, config=args.config,
        model_path=args.model_path, output_image=args.output_image, max_steps=args.max_steps, epochs=args.epochs,
        save_steps=args.save_steps, packing=args.packing, batch_size=args.batch_size, max_length=args.max_length,
        learning_rate=args.learning_rate, seed=args.seed, metrics_port=args.metrics_port,
        memory_check=args.memory_check, insecure_registry=args.insecure_registry,
        keep_checkpoints=args.keep_checkpoints,
    )
    try:
        return run(opts)
    except (ConfigError, DataError, DownloadError, TemplateError, TuneError) as err:
        raise CommandError(str(err)) from None


def handle_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runtime.command import CommandError
    from runtime.tuning.config import DatasetConfigSection
    from runtime.tuning.fetch import DownloadError, fetch_all

    defaults = DatasetConfigSection()
    try:
        fetch_all(args.urls, Path(args.to), max_bytes=args.max_bytes or defaults.max_download_bytes,
                  retries=defaults.download_retries if args.retries is None else args.retries)
    except DownloadError as err:
        raise CommandError(f"data download failed: {err}", code=1) from None
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("tune", help="fine-tune a preset with LoRA/QLoRA from a Kaito training_config.yaml",
                       description="Fine-tune a preset with LoRA or QLoRA (Kaito's tuning job).")
    _add_arguments(p)
    p.set_defaults(handler=handle)

    data = sub.add_parser("data", help="training data: fetch URLs (the tuning Job's data-downloader)")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    fetch = data_sub.add_parser(
        "fetch", help="download http(s) URLs into a folder, each named by its basename without the query",
        description="Download each URL into --to (Kaito's data-downloader): retries, resume of a partial file, "
                    "a size limit; a file already there is kept. URLs are logged without credentials or query.")
    fetch.add_argument("urls", nargs="+", metavar="URL")
    fetch.add_argument("--to", default=os.environ.get("DATA_VOLUME_PATH", DATA_DIR),
                       help=f"destination folder (default $DATA_VOLUME_PATH, else {DATA_DIR})")
    fetch.add_argument("--max-bytes", type=int, help="refuse a file larger than this (default 20 GiB)")
    fetch.add_argument("--retries", type=int, help="retries per URL after the first try (default 3)")
    fetch.set_defaults(handler=handle_fetch)


def main(argv: list[str] | None = None) -> int:
    """`python -m runtime.tuning ...`: `kaito tune ...` without the rest of the `kaito` CLI."""
    from runtime.command import run_command

    parser = argparse.ArgumentParser(prog="python -m runtime.tuning",
                                     description="Fine-tune a preset with LoRA or QLoRA (Kaito's tuning job).")
    _add_arguments(parser)
    return run_command(handle, parser.parse_args(argv))
