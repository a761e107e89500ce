"""`kaito presets list|show|generate` and `kaito plan`: the preset library and GPU plans on the command line.

Standard library only at module level (the sizing code is pure Python anyway, but keep `kaito --help` cheap).
"""

from __future__ import annotations

import json
import sys


def add_commands(sub) -> None:
    p = sub.add_parser("presets", help="list, show and generate model presets")
    s = p.add_subparsers(dest="presets_command", required=True)

    ls = s.add_parser("list", help="list the registered presets")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ls.set_defaults(handler=_list)

    show = s.add_parser("show", help="show one preset with the source of each number")
    show.add_argument("name")
    show.add_argument("-o", "--output", choices=["table", "json"], default="table")
    show.set_defaults(handler=_show)

    gen = s.add_parser("generate", help="derive a preset from a Hugging Face config.json and print it as Python")
    gen.add_argument("--config", required=True, help="path to config.json")
    gen.add_argument("--name", required=True, help="preset name (lower-case, DNS-1123)")
    gen.add_argument("--index", help="path to model.safetensors.index.json (exact weight size)")
    gen.add_argument("--repo", help="Hugging Face repo id (default: config's _name_or_path)")
    gen.add_argument("--revision", default="main", help="commit of the weights (40 hex digits)")
    gen.add_argument("-o", "--output", choices=["python", "json"], default="python")
    gen.set_defaults(handler=_generate)

    plan = sub.add_parser("plan", help="GPU memory plan for serving (or tuning) a preset on an instance type")
    plan.add_argument("name", help="preset name")
    where = plan.add_mutually_exclusive_group(required=True)
    where.add_argument("--instance-type", help="catalogued SKU, e.g. Standard_NC24ads_A100_v4")
    where.add_argument("--node-labels", help="JSON file of a bring-your-own node's GPU feature discovery labels")
    plan.add_argument("--count", type=int, default=1, help="nodes available (default 1)")
    plan.add_argument("--max-model-len", type=int, help="context to size for (default: longest that fits)")
    plan.add_argument("--runtime", choices=["vllm", "transformers"], default="vllm")
    plan.add_argument("--adapters", type=int, default=0, help="LoRA adapters served at once")
    plan.add_argument("--tuning", choices=["qlora", "lora"], help="plan a fine-tuning run instead of inference")
    plan.add_argument("--batch-size", type=int, default=1, help="tuning: per-device batch size")
    plan.add_argument("--seq-len", type=int, default=1024, help="tuning: sequence length")
    plan.add_argument("-o", "--output", choices=["table", "json"], default="table")
    plan.set_defaults(handler=_plan)

    it = sub.add_parser("instance-types", help="list the catalogued GPU instance types")
    it.add_argument("--provider", choices=["azure", "aws", "arc"])
    it.add_argument("--all", action="store_true", help="include deprecated and non-NVIDIA types")
    it.add_argument("-o", "--output", choices=["table", "json"], default="table")
    it.set_defaults(handler=_instance_types)


def _error(message: str):
    from runtime.command import CommandError

    return CommandError(message)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _get_preset(name: str):
    import presets

    try:
        return presets.get(name)
    except presets.UnknownPreset as err:
        raise _error(str(err)) from None


def _list(args) -> int:
    import presets
    from runtime.sizing.generate import preset_to_dict

    items = presets.all_presets()
    if args.output == "json":
        print(json.dumps([preset_to_dict(p) for p in items], indent=2))
        return 0
    rows = [[p.name, p.family, f"{p.parameters_b:g}B", f"{p.weights_gib:g}", p.weight_dtype, str(p.context_length),
             ",".join(p.tuning.methods) if p.tuning else "-", "yes" if p.gated else "no",
             ",".join(p.runtimes)] for p in items]
    print(_table(rows, ["NAME", "FAMILY", "PARAMS", "WEIGHTS_GIB", "DTYPE", "CONTEXT", "TUNING", "GATED",
                        "RUNTIMES"]))
    return 0


def _show(args) -> int:
    from runtime.sizing.generate import preset_to_dict

    preset = _get_preset(args.name)
    data = preset_to_dict(preset)
    if args.output == "json":
        print(json.dumps(data, indent=2))
        return 0
    sources = data.pop("sources")
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, 0, "", {})) or "-"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:28} {value}")
    if sources:
        print("\nsources:")
        for key, value in sources.items():
            print(f"  {key:26} {value}")
    return 0


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise _error(f"{what} {path!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise _error(f"{what} {path!r} is not valid JSON: {err}") from None


def _generate(args) -> int:
    from runtime.sizing.generate import ConfigError, preset_from_hf_config, preset_to_dict, render_preset_module

    config = _read_json(args.config, "--config")
    index = _read_json(args.index, "--index") if args.index else None
    try:
        preset = preset_from_hf_config(config, args.name, index, hf_repo=args.repo, revision=args.revision)
    except ConfigError as err:
        raise _error(str(err)) from None
    if args.output == "json":
        print(json.dumps(preset_to_dict(preset), indent=2))
    else:
        sys.stdout.write(render_preset_module(preset, origin=args.config))
    return 0


def _resolve_instance_type(args):
    from runtime.sizing.catalog import InvalidNodeLabels, UnknownInstanceType, from_node_labels, get_instance_type

    if args.instance_type:
        try:
            return get_instance_type(args.instance_type)
        except UnknownInstanceType as err:
            raise _error(str(err)) from None
    labels = _read_json(args.node_labels, "--node-labels")
    try:
        return from_node_labels(labels)
    except InvalidNodeLabels as err:
        raise _error(str(err)) from None


def _plan(args) -> int:
    from runtime.sizing.plan import DoesNotFit, PlanError, plan_inference, plan_tuning

    preset = _get_preset(args.name)
    instance_type = _resolve_instance_type(args)
    try:
        if args.tuning:
            result = plan_tuning(preset, instance_type, args.tuning, batch_size=args.batch_size,
                                 seq_len=args.seq_len, count=args.count)
        else:
            result = plan_inference(preset, instance_type, count=args.count, max_model_len=args.max_model_len,
                                    runtime=args.runtime, adapters=args.adapters)
    except DoesNotFit as err:
        if args.output == "json":
            print(json.dumps({"fits": False, "error": str(err), "shortfall_gib": err.shortfall_gib,
                              "suggestion": err.suggestion}, indent=2))
        raise _error(f"does not fit: {err}") from None
    except PlanError as err:
        raise _error(str(err)) from None
    if args.output == "json":
        print(json.dumps({"fits": True, **result.to_dict()}, indent=2))
        return 0
    print(_render_plan(result, instance_type, preset))
    return 0


def _kaito_line(preset, instance_type) -> str:
    """What Kaito HEAD's node estimator would say for the same node type (at its default 2048 tokens)."""
    from runtime.sizing.plan import PlanError, kaito_estimator_min_gpus

    try:
        gpus = kaito_estimator_min_gpus(preset, instance_type, min(2048, preset.context_length))
    except PlanError:
        return "GPU too small"
    nodes = -(-gpus // instance_type.gpu_count)
    return f"{gpus} GPU(s) -> {nodes} node(s) at 2048 tokens"


def _render_plan(plan, instance_type, preset) -> str:
    gpu = (f"{instance_type.gpu_count} x {instance_type.gpu_model} ({instance_type.gpu_memory_gib:g} GiB, "
           f"compute {instance_type.compute_capability:.1f})")
    if hasattr(plan, "tensor_parallel_size"):
        head = [
            ("preset", plan.preset), ("instance type", f"{plan.instance_type}: {gpu}"), ("runtime", plan.runtime),
            ("nodes", plan.nodes), ("GPUs per node", plan.gpus_per_node),
            ("tensor parallel", plan.tensor_parallel_size), ("pipeline parallel", plan.pipeline_parallel_size),
            ("data parallel", plan.data_parallel_size), ("dtype", plan.dtype),
            ("max model len", plan.max_model_len), ("gpu-memory-utilization", plan.gpu_memory_utilization),
            ("KV bytes/token", plan.kv_cache_bytes_per_token),
            ("kaito estimator", _kaito_line(preset, instance_type)),
        ]
    else:
        head = [
            ("preset", plan.preset), ("instance type", f"{plan.instance_type}: {gpu}"),
            ("method", plan.method), ("batch size", plan.batch_size), ("seq len", plan.seq_len),
            ("GPUs (data parallel)", plan.gpus), ("dtype", plan.dtype),
        ]
    lines = [f"{k:24} {v}" for k, v in head]
    lines += ["", "memory per GPU (GiB)"]
    for key, value in plan.breakdown.items():
        lines.append(f"  {key:22} {value:8.2f}")
    lines.append(f"  {'required':22} {plan.required_gib_per_gpu:8.2f}")
    lines.append(f"  {'available':22} {plan.available_gib_per_gpu:8.2f}")
    lines.append(f"  {'headroom':22} {plan.available_gib_per_gpu - plan.required_gib_per_gpu:8.2f}")
    for note in getattr(plan, "notes", ()):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _instance_types(args) -> int:
    from runtime.sizing.catalog import instance_types

    items = [it for it in instance_types() if args.all or (it.vendor == "nvidia" and not it.deprecated)]
    if args.provider:
        items = [it for it in items if it.provider == args.provider]
    if args.output == "json":
        print(json.dumps([it.to_dict() for it in items], indent=2))
        return 0
    rows = [[it.name, it.provider, str(it.gpu_count), it.gpu_model, f"{it.gpu_memory_gib:g}",
             f"{it.total_gpu_memory_gib:g}", f"{it.compute_capability:.1f}",
             "deprecated" if it.deprecated else ""] for it in items]
    print(_table(rows, ["NAME", "PROVIDER", "GPUS", "GPU", "GIB_PER_GPU", "GIB_TOTAL", "COMPUTE", ""]))
    return 0
