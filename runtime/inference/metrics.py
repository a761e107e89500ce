"""Prometheus metrics, named like vLLM's where the meaning matches (gateways and autoscalers read those names).

Each app gets its own registry (tests run several servers in one process). `HttpMetricsMiddleware` counts
HTTP requests by path and status; the serving layer records per-request latencies and token counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from runtime.inference.backends.base import EngineStats

# vLLM's buckets (vllm/v1/metrics/loggers.py), trimmed.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)

# Paths counted by name; anything else is "other" (keeps label cardinality bounded).
KNOWN_PATHS = {"/chat", "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/healthz", "/",
               "/metrics", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}


class ServerMetrics:
    CONTENT_TYPE = CONTENT_TYPE_LATEST

    def __init__(self, stats: Callable[[], EngineStats] | None, model_name: str) -> None:
        """`stats` feeds the running/waiting gauges; None where the engine exports its own (vLLM)."""
        self.registry = r = CollectorRegistry()
        self.model_name = model_name
        if stats is not None:
            Gauge("vllm:num_requests_running", "Requests in the running batch.", ["model_name"], registry=r).labels(
                model_name).set_function(lambda: stats().running)
            Gauge("vllm:num_requests_waiting", "Requests admitted but not yet running.", ["model_name"],
                  registry=r).labels(model_name).set_function(lambda: stats().waiting)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Time to first token.", ["model_name"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Time between output tokens.", ["model_name"],
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Request latency, arrival to last token.",
                             ["model_name"], buckets=E2E_BUCKETS, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prefill tokens processed.", ["model_name"], registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", ["model_name"], registry=r)
        self.request_success = Counter("vllm:request_success", "Finished requests by finish reason.",
                                       ["model_name", "finished_reason"], registry=r)
        self.cancelled = Counter("kaito_requests_cancelled", "Generations cancelled before they finished (client "
                                 "gone).", ["model_name"], registry=r)
        self.rejected = Counter("kaito_ratelimit_rejected", "Requests answered 429 because the queue was full.",
                                registry=r)
        self.http = Counter("kaito_http_requests", "HTTP requests by path, method and status.",
                            ["path", "method", "status"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)



class HttpMetricsMiddleware:
    """ASGI middleware counting requests by path, method and status: `app.add_middleware(HttpMetricsMiddleware,
    metrics=server_metrics)`."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app = app
        self.counter = metrics.http

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            self.counter.labels(path if path in KNOWN_PATHS else "other", scope.get("method", ""),
                                str(status["code"])).inc()
