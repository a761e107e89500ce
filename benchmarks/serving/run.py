"""Serving benchmark: a streaming load generator at concurrency 1, 4 and 16 (fixed, varied prompts; 64 new tokens).

Default run (no --url), all on this machine, one after the other:
1. our server (`python -m runtime.inference`, continuous batching) on SmolLM2-135M-Instruct;
2. the baseline: `transformers.pipeline` behind FastAPI, one request at a time (Kaito's server), same model;
3. a bare `model.generate` TTFT reference (prefill + first token, in this process).
It prints requests/s, output tokens/s, TTFT and latency p50/p95 per level, checks the targets (c16 >= 4x baseline
output tok/s; c1 TTFT <= 1.2x bare generate) and writes benchmarks/results/serving-<time>.json.

With --url it measures any OpenAI-compatible server (e.g. vLLM) and nothing else:

    python -m benchmarks.serving.run --url http://localhost:8000 [--model NAME] [--api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parents[1] / "results"
ROOT = Path(__file__).resolve().parents[2]

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a short recipe for pancakes.",
    "What does a compiler do?",
    "Name three planets and one fact about each.",
    "How do vaccines work?",
    "Summarise the plot of Romeo and Juliet.",
    "What is the difference between weather and climate?",
    "Suggest a name for a pet turtle and explain it.",
    "How many legs does a spider have, and why?",
    "What is a prime number? Give examples.",
    "Describe a rainbow to a child.",
    "What are the benefits of walking every day?",
]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft, tokens = None, 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if ttft is None and (choice.get("delta") or {}).get("content"):
                    ttft = time.perf_counter() - start
    return {"ttft": ttft if ttft is not None else time.perf_counter() - start,
            "latency": time.perf_counter() - start, "tokens": tokens}


async def load_level(url: str, model: str, concurrency: int, requests: int, max_tokens: int,
                     headers: dict) -> dict:
    queue = list(range(requests))
    results: list[dict] = []

    async with httpx.AsyncClient(timeout=600, headers=headers) as client:
        async def worker():
            while queue:
                i = queue.pop(0)
                results.append(await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ttfts = [r["ttft"] for r in results]
    lats = [r["latency"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "requests": len(results), "wall_s": wall,
            "requests_per_s": len(results) / wall, "output_tokens": tokens, "output_tokens_per_s": tokens / wall,
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
            "latency_p50_s": percentile(lats, 50), "latency_p95_s": percentile(lats, 95)}


def measure(url: str, model: str, levels: list[int], max_tokens: int, requests: int | None,
            headers: dict) -> list[dict]:
    async def warm_up() -> None:
        async with httpx.AsyncClient(timeout=600, headers=headers) as client:
            await one_request(client, url, model, "Hi", 4)

    asyncio.run(warm_up())
    rows = []
    for c in levels:
        n = requests or max(4, c)
        rows.append(asyncio.run(load_level(url, model, c, n, max_tokens, headers)))
        print(f"  c={c}: {rows[-1]['output_tokens_per_s']:.1f} tok/s, TTFT p50 {rows[-1]['ttft_p50_s']:.3f}s",
              flush=True)
    return rows


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def subprocess_server(cmd: list[str], port: int, threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(RESULTS / f".server-{port}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{cmd} not healthy after 300 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def bare_generate_ttft(model_dir: str, threads: int, repeats: int = 2) -> dict:
    """Prefill + first token with a plain `model.generate(max_new_tokens=1)`, greedy, the same prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    times = []
    with torch.no_grad():
        model.generate(**tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=True), max_new_tokens=1)
        for _ in range(repeats):
            for prompt in PROMPTS[:8]:
                inputs = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
                start = time.perf_counter()
                model.generate(**inputs, max_new_tokens=1, do_sample=False)
                times.append(time.perf_counter() - start)
    return {"ttft_p50_s": percentile(times, 50), "ttft_p95_s": percentile(times, 95), "samples": len(times)}


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'conc':>4} {'reqs':>4} {'req/s':>7} {'out tok/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} "
          f"{'lat p50':>8} {'lat p95':>8}")
    for r in rows:
        print(f"{r['concurrency']:>4} {r['requests']:>4} {r['requests_per_s']:>7.2f} {r['output_tokens_per_s']:>9.1f} "
              f"{r['ttft_p50_s']:>9.3f} {r['ttft_p95_s']:>9.3f} {r['latency_p50_s']:>8.2f} {r['latency_p95_s']:>8.2f}")


def environment(threads: int) -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(), "torch_threads_servers": threads, "load_average": os.getloadavg(),
            "machine": platform.machine(), "note": "CPU shared with other jobs; timings are noisy"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark this OpenAI-compatible server only")
    parser.add_argument("--model", help="model name for --url (default: the first of /v1/models)")
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"))
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, help="requests per level (default max(4, concurrency))")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                        help="torch threads of the servers and the bare reference")
    parser.add_argument("--preset", default="smollm2-135m-instruct")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/serving-<time>.json)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"max_tokens": args.max_tokens, "levels": levels, "environment": environment(args.threads)}

    if args.url:
        model = args.model or httpx.get(args.url + "/v1/models", headers=headers).json()["data"][0]["id"]
        print(f"benchmarking {args.url} ({model})")
        report["target"] = {"url": args.url, "model": model,
                            "rows": measure(args.url, model, levels, args.max_tokens, args.requests, headers)}
        print_table(f"{model} at {args.url}", report["target"]["rows"])
    else:
        import presets
        from runtime.models import ensure_model

        preset = presets.get(args.preset)
        model_dir = str(ensure_model(preset.local_builder))
        port = free_port()
        print(f"our server ({preset.name}, continuous batching)", flush=True)
        cmd = [sys.executable, "-m", "runtime.inference", preset.name, "--host", "127.0.0.1", "--port", str(port),
               "--adapters-dir", str(RESULTS / ".no-adapters"), "--max-batch-size", str(max(levels))]
        with subprocess_server(cmd, port, args.threads) as url:
            ours = measure(url, preset.name, levels, args.max_tokens, args.requests, {})
        port = free_port()
        print("baseline (transformers.pipeline, one request at a time)", flush=True)
        with subprocess_server([sys.executable, "-m", "benchmarks.serving.baseline", model_dir, "--port", str(port)],
                               port, args.threads) as url:
            base = measure(url, "baseline", levels, args.max_tokens, args.requests, {})
        print("bare model.generate TTFT", flush=True)
        bare = bare_generate_ttft(model_dir, args.threads)
        print_table("ours (runtime.inference, continuous batching)", ours)
        print_table("baseline (pipeline behind FastAPI, serial)", base)
        print(f"\nbare model.generate TTFT: p50 {bare['ttft_p50_s']:.3f}s p95 {bare['ttft_p95_s']:.3f}s")
        top = max(levels)
        speedup = ours[-1]["output_tokens_per_s"] / base[-1]["output_tokens_per_s"]
        ttft_ratio = ours[0]["ttft_p50_s"] / bare["ttft_p50_s"]
        targets = {f"c{top}_output_tok_s_vs_baseline": round(speedup, 2), "target_speedup": 4.0,
                   "c1_ttft_p50_vs_bare_generate": round(ttft_ratio, 2), "target_ttft_ratio": 1.2,
                   "speedup_met": speedup >= 4.0, "ttft_met": ttft_ratio <= 1.2}
        print(f"c{top} output tok/s vs baseline: {speedup:.2f}x (target >= 4x: {'met' if speedup >= 4 else 'MISSED'})")
        print(f"c1 TTFT p50 vs bare generate: {ttft_ratio:.2f}x (target <= 1.2x: "
              f"{'met' if ttft_ratio <= 1.2 else 'MISSED'})")
        report.update({"model": preset.name, "ours": ours, "baseline": base, "bare_generate": bare,
                       "targets": targets})
    out = Path(args.out) if args.out else RESULTS / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
