"""A property-based run over a live server's whole HTTP surface, generated from the OpenAPI schema it serves
(schemathesis: valid and invalid bodies, query strings and headers for every operation).

The properties, for every generated request: no 5xx; a 4xx carries the error envelope (the OpenAI one, Kaito's
`{"detail": ...}` on /chat, Anthropic's on vLLM's /v1/messages); and, after the run, `/health` is 200 and a plain
request is served. Each backend's tier runs it against its own server (tests/inference/test_fuzz.py,
tests/vllm/test_fuzz_vllm.py).

One 5xx is not a failure: 501 Not Implemented, which says that this server or model lacks a feature whatever the
request holds (vLLM answers it on /v1/systemone for a model without that API); it is HTTP's answer for that, and no
retry or other replica would help.
"""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode


def fuzz_settings(examples: int) -> settings:
    """`examples` per operation and generation mode, the same ones every run (derandomized), no shrinking (a
    failure shows the request that failed), no example database in the checkout."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


def run(base_url: str, examples: int, headers: dict[str, str] | None = None) -> dict[str, int]:
    """Fuzz every operation of the schema the server at `base_url` serves, in both modes (valid requests, and
    requests that break the schema); returns the number of requests sent per operation. Raises at the first failed
    property, with its request. (schemathesis's pytest plugin does not load with pytest 9, so this drives
    Hypothesis directly.)"""
    raw = httpx.get(f"{base_url}/openapi.json", headers=headers, timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=base_url, headers=headers or {}, request_timeout=120)
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @fuzz_settings(examples)
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                check_response(case, case.call(headers=headers))
                sent[case.operation.label] = sent.get(case.operation.label, 0) + 1

            try:
                fuzz()
            except Unsatisfiable:  # an operation without parameters or body has no invalid request
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def check_response(case, response) -> None:
    """No 5xx, and the error envelope on a 4xx (what our errors.py promises on every route)."""
    request = f"{case.method} {case.formatted_path} body={_short(case.body)} query={case.query}"
    assert response.status_code < 500 or response.status_code == 501, (
        f"{response.status_code} for {request}: {response.text[:500]}")
    if 400 <= response.status_code < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"{response.status_code} without a JSON body for {request}: {response.text[:300]}"
                                 ) from None
        if case.formatted_path == "/chat":
            assert isinstance(body, dict) and isinstance(body.get("detail"), str), (request, body)
        elif case.formatted_path.startswith("/v1/messages") and body.get("type") == "error":  # Anthropic's API
            assert isinstance(body.get("error"), dict) and isinstance(body["error"].get("message"), str), (request, body)
        else:
            error = body.get("error") if isinstance(body, dict) else None
            assert isinstance(error, dict) and isinstance(error.get("message"), str), (request, body)
            assert {"type", "param", "code"} <= error.keys(), (request, body)


def check_still_serving(base_url: str, model: str, headers: dict[str, str] | None = None) -> None:
    """After the run: healthy, and a plain request is served."""
    assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
    response = httpx.post(f"{base_url}/v1/completions", headers=headers, timeout=120,
                          json={"model": model, "prompt": "Hello", "max_tokens": 2})
    assert response.status_code == 200, response.text


def _short(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
