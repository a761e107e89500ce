"""`make serve`'s setup: the default preset (SmolLM2-135M-Instruct) with no arguments answers the France question."""

import httpx
import openai
import pytest

from tests.inference.server import run_server

pytestmark = pytest.mark.slow


def test_default_server_answers_sensibly(smollm2_dir, tmp_path):
    with run_server(["--adapters-dir", str(tmp_path)], model="smollm2-135m-instruct") as s:
        c = openai.OpenAI(base_url=s.base_url + "/v1", api_key="none", max_retries=0, timeout=120)
        assert [m.id for m in c.models.list().data] == ["smollm2-135m-instruct"]
        resp = c.chat.completions.create(
            model="smollm2-135m-instruct", max_tokens=24, temperature=0,
            messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in resp.choices[0].message.content
        kaito = httpx.post(s.base_url + "/chat", timeout=120, json={
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "generate_kwargs": {"do_sample": False, "max_new_tokens": 24}})
        assert "Paris" in kaito.json()["Result"]
        assert "Try:" in s.log_text() and "curl" in s.log_text()
