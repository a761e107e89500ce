"""Where our transformers server's time goes at concurrency 16: py-spy samples the running server, unchanged.

    python -m benchmarks.serving.profile [--concurrency 16] [--requests 48] [--max-tokens 64]

The server runs under `py-spy record` (attaching to a running process by PID is refused on these machines; a child
is not), serves the same load as the benchmark (benchmarks/serving/load.py: forced lengths, streaming), then stops.
Every sample of every busy thread is put in the first bucket its stack matches, leaf first: our sampler, the model's
forward, the engine's Python scheduling, per-token decode and queues, our serving and HTTP layers, the asyncio loop.
Samples of start-up and shut-down are left out. Prints a table (share of the busy samples, with the top functions of
each bucket) and writes benchmarks/results/profile-<time>.json, with the raw py-spy stacks beside it (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.serving import load
from benchmarks.serving.servers import ROOT, free_port, server_env

RESULTS = ROOT / "benchmarks" / "results"

# (bucket, substrings of a frame that put a sample in it), checked from the leaf frame up: the first match wins.
BUCKETS = (
    ("our sampler (backends/sampling.py)", ("inference/backends/sampling.py",)),
    ("model forward (torch)", ("modeling_llama.py", "torch/nn/", "integrations/sdpa_attention.py",
                               "masking_utils.py", "torch/_ops.py")),
    ("engine Python scheduling (transformers CB)", ("continuous_batching/",)),
    ("per-token decode and queues", ("tokenizers", "DecodeStream", "asyncio/queues.py", "inference/backends/transformers.py")),
    ("our serving and HTTP layers", ("inference/serving.py", "inference/api/", "starlette/", "fastapi/", "uvicorn/",
                                     "h11/", "json/", "inference/metrics.py", "prometheus_client/")),
    ("asyncio loop and threads", ("asyncio/", "selectors.py", "threading.py", "concurrent/futures/")),
)
START_AND_STOP = ("from_pretrained", "init_continuous_batching", "_find_and_load", "PagedAttentionCache.__init__",
                  "ContinuousBatchingManager.stop", "__del__")
"""Frames of start-up and shut-down (loading weights, imports, the engine's cache, stopping), plus
TransformersBackend.load itself (`_outside_load`): not the load being measured."""


def _outside_load(stack: list[str]) -> bool:
    return any(any(marker in frame for marker in START_AND_STOP)
               or frame.startswith("load (") and "backends/transformers.py" in frame for frame in stack)


def bucket(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in BUCKETS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def aggregate(raw: str) -> tuple[Counter, dict[str, Counter], int]:
    """Busy samples per bucket, and per bucket per leaf function, from py-spy's raw output ("frame;frame;... count"
    lines); start-up and shut-down samples are counted apart."""
    counts: Counter = Counter()
    leaves: dict[str, Counter] = {}
    outside = 0
    for line in raw.splitlines():
        stack_text, _, number = line.rpartition(" ")
        if not stack_text or not number.isdigit():
            continue
        stack = stack_text.split(";")
        if _outside_load(stack):
            outside += int(number)
            continue
        name = bucket(stack)
        counts[name] += int(number)
        leaves.setdefault(name, Counter())[stack[-1].split(" (")[0]] += int(number)
    return counts, leaves, outside


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    args = parser.parse_args(argv)

    import presets
    from runtime.models import ensure_model

    preset = presets.get(args.preset)
    model_dir = str(ensure_model(preset.local_builder))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw_path = RESULTS / f"profile-{stamp}.txt"
    port = free_port()
    py_spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(py_spy), "record", "--format", "raw", "--rate", str(args.rate), "--nonblocking", "--output",
           str(raw_path), "--", sys.executable, "-m", "runtime.inference", preset.name, "--model-path", model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--adapters-dir", "/nonexistent/no-adapters",
           "--max-batch-size", str(args.concurrency)]
    url = f"http://127.0.0.1:{port}"
    log = open(RESULTS / f".profile-{port}.log", "wb")  # noqa: SIM115 - closed below
    spy = subprocess.Popen(cmd, cwd=ROOT, env=server_env(args.threads), stdout=log, stderr=subprocess.STDOUT)
    try:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or spy.poll() is not None:
                raise SystemExit(f"the server did not start; see {log.name}")
            time.sleep(0.5)
        load.warm_up(url, preset.name)
        row = load.run_level(url, preset.name, args.concurrency, args.requests, args.max_tokens)
        print(f"c={args.concurrency}: {row['output_tok_s']:.1f} tok/s, ITL p50 {row['itl_p50_s'] * 1000:.1f} ms",
              flush=True)
    finally:
        server = _child(spy.pid)
        if server:
            os.kill(server, signal.SIGINT)  # the server exits; py-spy then writes its samples and exits too
        spy.wait(timeout=120)
        log.close()
    counts, leaves, outside = aggregate(raw_path.read_text())
    busy = sum(counts.values())
    print(f"\n{busy} busy samples under load at c{args.concurrency} ({outside} of start-up and shut-down left out)")
    print(f"{'where':<46} {'share':>6}  top functions (share of all busy samples)")
    table = []
    for name, count in counts.most_common():
        share = count / busy if busy else 0.0
        top = [(leaf, n / busy) for leaf, n in leaves[name].most_common(3)]
        table.append({"where": name, "samples": count, "share": round(share, 4),
                      "top": [{"function": leaf, "share": round(part, 4)} for leaf, part in top]})
        print(f"{name:<46} {share:>6.1%}  " + ", ".join(f"{leaf} {part:.1%}" for leaf, part in top))
    out = RESULTS / f"profile-{stamp}.json"
    out.write_text(json.dumps({"preset": preset.name, "concurrency": args.concurrency, "requests": args.requests,
                               "max_tokens": args.max_tokens, "threads": args.threads, "rate": args.rate,
                               "load": row, "busy_samples": busy, "start_and_stop_samples": outside, "table": table,
                               "raw": raw_path.name, "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {out} and {raw_path}")
    return 0


def _child(pid: int) -> int | None:
    """The first child process of `pid` (the server py-spy started)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        if children:
            return int(children[0])
    return None


if __name__ == "__main__":
    sys.exit(main())
