"""The load: streaming `/v1/completions` requests with their output length forced (`ignore_eos` + `max_tokens`, as
`vllm bench serve` sends them), `concurrency` at a time, and what each saw: time to first token, the gaps between
tokens, and the completion tokens the server counted (every request must report exactly `max_tokens`)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

PROMPTS = [
    "The capital of France is",
    "Photosynthesis is the process by which",
    "Here is a haiku about the sea:",
    "Three uses of a paperclip are",
    "The sky is blue because",
    "A short recipe for pancakes:",
    "A compiler is a program that",
    "Three planets of the solar system are",
    "Vaccines work by",
    "The plot of Romeo and Juliet, in short:",
    "The difference between weather and climate is",
    "A good name for a pet turtle would be",
    "A spider has eight legs because",
    "A prime number is",
    "To a child, a rainbow is",
    "Walking every day is good for you because",
]


class UnequalWork(RuntimeError):
    """A server generated another number of tokens than asked: its figures would not be comparable."""


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, last, gaps, tokens = None, None, [], None
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if any(choice.get("text") for choice in chunk.get("choices", [])):
                now = time.perf_counter()
                if first is None:
                    first = now - start
                else:
                    gaps.append(now - last)
                last = now
    if tokens != max_tokens:
        raise UnequalWork(f"{url}: {tokens} completion tokens for max_tokens={max_tokens} with ignore_eos")
    return {"ttft": first if first is not None else time.perf_counter() - start, "gaps": gaps, "tokens": tokens,
            "latency": time.perf_counter() - start}


async def _level(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    pending = list(range(requests))
    results: list[dict] = []
    async with httpx.AsyncClient(timeout=900) as client:
        async def worker():
            while pending:
                i = pending.pop(0)
                results.append(await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ttfts = [r["ttft"] for r in results]
    gaps = [g for r in results for g in r["gaps"]]
    return {"concurrency": concurrency, "requests": len(results), "wall_s": wall,
            "output_tokens": sum(r["tokens"] for r in results),
            "output_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_s": percentile(ttfts, 50), "ttft_p99_s": percentile(ttfts, 99),
            "itl_p50_s": percentile(gaps, 50)}


def run_level(url: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    return asyncio.run(_level(url, model, concurrency, requests, max_tokens))


def warm_up(url: str, model: str) -> None:
    asyncio.run(_level(url, model, 1, 1, 4))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(runs: list[dict]) -> dict:
    """The median of each figure over rounds, with its min and max."""
    out: dict = {"rounds": len(runs)}
    for key in ("output_tok_s", "ttft_p50_s", "ttft_p99_s", "itl_p50_s"):
        values = [r[key] for r in runs]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out
