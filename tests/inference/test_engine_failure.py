"""A broken engine must not leave a server that is up but useless: readiness goes 503 at once, the request in
flight gets 503 with Retry-After, and the process exits non-zero, so Kubernetes restarts the pod.

The fault is injected from outside the product (tests/inference/faults/sitecustomize.py): once a trigger file
exists, the model's forward pass raises inside transformers' generation loop.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.inference.server import run_server
from tests.inference.test_backpressure import LONG, metric
from tests.support import wait_until

pytestmark = pytest.mark.slow

FAULTS = Path(__file__).resolve().parent / "faults"


def test_a_dead_engine_fails_requests_with_503_and_exits(tiny_model_dir, tmp_path):
    trigger = tmp_path / "break-the-engine"
    env = {"PYTHONPATH": str(FAULTS), "KAITO_TEST_ENGINE_FAULT": str(trigger)}
    with run_server(["tiny-llama", "--adapters-dir", str(tmp_path / "none")], model="tiny-llama", env=env) as s:
        proc = s.extra["proc"]
        ok = httpx.post(s.base_url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
        assert ok.status_code == 200  # the injected fault sleeps until triggered
        assert httpx.get(s.base_url + "/v1/health/live").status_code == 200
        assert httpx.get(s.base_url + "/v1/health/ready").status_code == 200

        in_flight: dict = {}
        thread = threading.Thread(target=lambda: in_flight.update(r=httpx.post(
            s.base_url + "/v1/chat/completions", json=LONG, timeout=120)))
        thread.start()
        wait_until("a request running", lambda: metric(s, "vllm:num_requests_running") == 1)
        trigger.touch()
        thread.join(60)
        r = in_flight["r"]
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["error"]["type"] == "service_unavailable"
        assert "injected engine fault" in r.json()["error"]["message"]

        assert proc.wait(timeout=60) == 1  # exited by itself, non-zero: the pod restarts
        log = s.log_text()
        assert "engine stopped: the generation loop stopped: RuntimeError: injected engine fault" in log
        assert "exiting so that the pod restarts" in log
