"""A fast asyncio OpenAI-compatible upstream for the serving benchmarks (loopback only).

Unlike ``tests/standin.py`` (a threaded stdlib server built for fault injection in tests),
this one is a bare ASGI app under uvicorn, so at hundreds of concurrent requests the
upstream costs little CPU and the numbers measure the proxy. Every chat completion waits
``--latency-ms`` (the "model"), then answers; ``stream: true`` gets server-sent events, words
as deltas, then a usage chunk and ``[DONE]``. ``--fault-rate`` answers that share of requests
with a 500 (to exercise the proxy's fallback under load).

Usage: ``python scripts/loopback_upstream.py --port P [--latency-ms 50] [--fault-rate 0]``;
prints its base URL on stdout when it is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

import uvicorn

WORDS = ["the", "routed", "model", "answers", "briefly", "and", "then", "stops"]


async def read_body(receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def make_app(latency_s: float, fault_rate: float, seed: int = 0):
    rng = random.Random(seed)

    async def send_json(send, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await read_body(receive)
        if scope["path"].endswith("/models"):
            await send_json(send, 200, {"object": "list", "data": []})
            return
        request = json.loads(body or b"{}")
        model = request.get("model", "m")
        await asyncio.sleep(latency_s)
        if rng.random() < fault_rate:
            error = {"error": {"message": "injected fault", "type": "server_error"}}
            await send_json(send, 500, error)
            return
        usage = {
            "prompt_tokens": 20,
            "completion_tokens": len(WORDS),
            "total_tokens": 20 + len(WORDS),
        }
        if not request.get("stream"):
            reply = {
                "id": "cmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(WORDS)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            await send_json(send, 200, reply)
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        def chunk(delta: dict, finish: str | None = None, with_usage: bool = False) -> bytes:
            data = {
                "id": "cmpl-bench",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": []
                if with_usage
                else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n".encode()

        parts = [chunk({"role": "assistant", "content": ""})]
        parts += [chunk({"content": f"{w} "}) for w in WORDS]
        parts += [chunk({}, "stop"), chunk({}, with_usage=True), b"data: [DONE]\n\n"]
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    config = uvicorn.Config(
        make_app(args.latency_ms / 1000, args.fault_rate),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=75,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    print(f"http://127.0.0.1:{args.port}/v1", flush=True)
    sys.exit(0 if server.run() is None else 1)


if __name__ == "__main__":
    main()
