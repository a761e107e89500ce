"""Where training progress goes: a status file, JSON-lines events and Prometheus metrics (no torch imports).

- `status.json` in the output dir (rewritten atomically): state, step, total, loss, tokens/s, ETA;
- `train_log.jsonl` in the output dir, and the same lines on stdout when it is not a terminal (where the
  trainer's tqdm bar shows instead);
- Prometheus metrics on `--metrics-port` (5000 by default, Kaito's port; 0 disables) while training.
runtime.tuning.callbacks feeds them from the trainer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from runtime.kaito import TRAIN_LOG_FILE

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
LOG_FILE = TRAIN_LOG_FILE


class EventLog:
    """Appends one JSON object per line to `train_log.jsonl` (and stdout when it is not a terminal)."""

    def __init__(self, output_dir: Path, echo: bool | None = None):
        self.path = output_dir / LOG_FILE
        self.echo = (not sys.stdout.isatty()) if echo is None else echo

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, default=str)
        with self.path.open("a") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def write_status(output_dir: Path, status: dict[str, Any]) -> None:
    tmp = output_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(status, indent=2))
    os.replace(tmp, output_dir / STATUS_FILE)


class Metrics:
    """Prometheus gauges on their own registry, served on `port` while training (0: not served)."""

    def __init__(self, port: int, addr: str = "0.0.0.0"):
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        ns = "kaito_tuning"
        self.step = Gauge("step", "Optimizer steps done", namespace=ns, registry=self.registry)
        self.total = Gauge("total_steps", "Optimizer steps planned", namespace=ns, registry=self.registry)
        self.loss = Gauge("loss", "Latest training loss", namespace=ns, registry=self.registry)
        self.tokens_per_s = Gauge("tokens_per_second", "Trained tokens per second", namespace=ns,
                                  registry=self.registry)
        self.eta = Gauge("eta_seconds", "Estimated seconds left", namespace=ns, registry=self.registry)
        self.tokens = Counter("tokens", "Tokens trained", namespace=ns, registry=self.registry)
        self.running = Gauge("running", "1 while training", namespace=ns, registry=self.registry)
        self._server = None
        if port:
            try:
                self._server, _thread = start_http_server(port, addr=addr, registry=self.registry)
            except OSError as err:  # the metrics are a convenience: a taken port must not stop a training run
                log.warning("no Prometheus metrics: port %d: %s (training goes on)", port, err.strerror or err)
                return
            log.info("Prometheus metrics on http://%s:%d/metrics", addr, port)

    def close(self) -> None:
        self.running.set(0)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


