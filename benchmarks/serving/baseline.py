"""The baseline: Kaito's way of serving on transformers, one request at a time through `transformers.pipeline`
behind FastAPI, with a minimal streaming /v1/chat/completions so the same load generator measures TTFT.

    python -m benchmarks.serving.baseline MODEL_DIR --port 5001
"""

import argparse
import asyncio
import json
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def build_app(model_dir: str):
    import torch
    from transformers import AutoTokenizer, TextIteratorStreamer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pipe = pipeline("text-generation", model=model_dir, tokenizer=tokenizer, dtype=torch.float32, device="cpu")
    lock = threading.Lock()  # Kaito's server runs one generation at a time
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "Healthy"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "baseline", "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        """Streaming only, greedy; `ignore_eos` as transformers says it: min_new_tokens = max_new_tokens."""
        body = await request.json()
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        new = body.get("max_tokens", 16)
        counted = {"n": 0}

        def run():
            inputs = tokenizer(body["prompt"], return_tensors="pt")
            with lock:
                out = pipe.model.generate(**inputs, max_new_tokens=new, min_new_tokens=new if body.get("ignore_eos")
                                          else 0, do_sample=False, streamer=streamer)
            counted["n"] = out.shape[1] - inputs["input_ids"].shape[1]

        worker = threading.Thread(target=run, daemon=True)
        worker.start()

        return _stream(streamer, worker, counted, "text_completion", lambda piece: {"index": 0, "text": piece})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        counted = {"n": 0}

        def run():
            with lock:
                out = pipe(body["messages"], max_new_tokens=body.get("max_tokens", 64), do_sample=False,
                           streamer=streamer, return_full_text=False)
            counted["n"] = len(tokenizer(out[0]["generated_text"], add_special_tokens=False)["input_ids"])

        worker = threading.Thread(target=run, daemon=True)
        worker.start()

        return _stream(streamer, worker, counted, "chat.completion.chunk",
                       lambda piece: {"index": 0, "delta": {"content": piece}})

    return app


def _stream(streamer, worker: threading.Thread, counted: dict, kind: str, choice) -> StreamingResponse:
    """Server-sent events of what `streamer` yields (each piece as `choice(piece)`), then the usage and [DONE]."""

    async def events():
        base = {"id": "x", "object": kind, "created": int(time.time()), "model": "baseline"}
        iterator = iter(streamer)
        while True:
            piece = await asyncio.to_thread(next, iterator, None)
            if piece is None:
                break
            if piece:
                yield f"data: {json.dumps({**base, 'choices': [choice(piece)]})}\n\n"
        await asyncio.to_thread(worker.join)
        usage = {"prompt_tokens": 0, "completion_tokens": counted["n"], "total_tokens": counted["n"]}
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
