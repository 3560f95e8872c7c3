"""Slow-upstream benchmark (not a test): does one hung model delay the others?

One loopback upstream (``loopback_upstream.py``'s app, its own process) serves every pool
model after ``--latency-ms``, except the first, which hangs for ``--hang-s`` (longer than the
run): one host, as when one provider serves all the models. The proxy (``trouter serve``, its
own process, default settings) is in front. Measured, on this machine:

1. **unloaded**: ``--requests`` requests to a healthy model by name, ``--concurrency`` in
   flight: p50/p99;
2. **while the other hangs**: ``--clients`` clients (their own process) each send one
   request to the hung model and give up on it after ``--give-up-s`` (with ``--period-s P``
   each sends another every P seconds); ``--settle-s`` later the same number of healthy
   requests is measured again, while the hung model's calls are still outstanding.

The target is the healthy model's p99 while the other hangs under 2x its unloaded p99. The
hostile clients' outcomes (HTTP statuses, give-ups) are counted. ``--json PATH`` writes every
figure with the load average at start and end (the machine is shared: quote it).

Usage: ``python scripts/bench_slow_upstream.py [--upstream auto] [--json PATH]``.
Without ``--model-dir`` a kNN router is fitted on 300 RouterBench training rows first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stack import (  # noqa: E402
    add_common_arguments,
    chat_bodies,
    free_port,
    gsm8k_questions,
    machine,
    router_dir,
    run_load,
    start,
    start_proxy,
    stop,
    wait_http,
    write_pool,
    write_record,
)


async def _hostile(
    url: str, model: str, clients: int, give_up_s: float, period_s: float, run_s: float
) -> dict:
    """``clients`` clients, each one request to ``model`` per ``period_s`` given up after
    ``give_up_s``, for ``run_s``; the count of each outcome."""
    import aiohttp

    tally: Counter[str] = Counter()
    body = {"model": model, "messages": [{"role": "user", "content": "Are you there?"}]}
    loop = asyncio.get_running_loop()
    end = loop.time() + run_s
    connector = aiohttp.TCPConnector(limit=clients + 10)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while loop.time() < end:
                started = loop.time()
                try:
                    async with asyncio.timeout(give_up_s):
                        async with session.post(url, json=body) as reply:
                            await reply.read()
                            tally[f"HTTP {reply.status}"] += 1
                except TimeoutError:
                    tally["gave up"] += 1
                except aiohttp.ClientError as err:
                    tally[type(err).__name__] += 1
                if not period_s:
                    return
                await asyncio.sleep(max(0.0, period_s - (loop.time() - started)))

        await asyncio.gather(*(client() for _ in range(clients)))
    return dict(tally)


def start_hostile(url: str, model: str, args, run_s: float) -> subprocess.Popen:
    command = [
        sys.executable,
        __file__,
        "--hostile-worker",
        json.dumps([url, model, args.clients, args.give_up_s, args.period_s, run_s]),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def hanging_app(latency_s: float, hung_model: str, hang_s: float):
    """``loopback_upstream``'s app, except that requests for ``hung_model`` wait ``hang_s``."""
    from loopback_upstream import make_app, read_body

    inner = make_app(latency_s, 0.0)

    async def app(scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await inner(scope, receive, send)
        body = await read_body(receive)
        if json.loads(body or b"{}").get("model") == hung_model:
            await asyncio.sleep(hang_s)

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        return await inner(scope, replay, send)

    return app


def serve_upstream(port: int, latency_s: float, hung_model: str, hang_s: float) -> None:
    import uvicorn

    app = hanging_app(latency_s, hung_model, hang_s)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=4096
    )
    uvicorn.Server(config).run()


def start_hanging_upstream(workdir: Path, hung_model: str, args) -> tuple:
    port = free_port()
    spec = [port, args.latency_ms / 1000, hung_model, args.hang_s]
    command = [sys.executable, __file__, "--upstream-worker", json.dumps(spec)]
    process = start(command, workdir / f"upstream-{port}.log")
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(f"{base}/models", process=process)
    return process, base


def bench(args, workdir: Path) -> dict:
    import trouter

    model_dir = router_dir(args.model_dir, args.encoder, workdir)
    models = trouter.load(model_dir).models
    hung, healthy = models[0], models[1]
    upstream, upstream_base = start_hanging_upstream(workdir, hung, args)
    proxy = None
    try:
        pool = write_pool(workdir / "pool.yaml", models, upstream_base)
        proxy, base = start_proxy(model_dir, pool, workdir, "--upstream", args.upstream)
        url = f"{base}/v1/chat/completions"
        questions = gsm8k_questions("train", 100 + 2 * args.requests)
        run_load(url, chat_bodies(questions[:100], healthy), args.concurrency)  # warm-up
        texts = questions[100 : 100 + args.requests]
        unloaded = run_load(url, chat_bodies(texts, healthy), args.concurrency).summary()
        print("unloaded:", json.dumps(unloaded), flush=True)
        measure_s = 2 * args.requests * args.latency_ms / 1000 / args.concurrency + 10
        hostile = start_hostile(url, hung, args, args.settle_s + measure_s)
        time.sleep(args.settle_s)
        texts = questions[100 + args.requests : 100 + 2 * args.requests]
        loaded = run_load(url, chat_bodies(texts, healthy), args.concurrency).summary()
        print("while the other hangs:", json.dumps(loaded), flush=True)
        stop(proxy)  # ends the hostile requests still waiting (counted as disconnected)
        out, _ = hostile.communicate(timeout=measure_s + args.settle_s + 60)
        tally = json.loads(out.strip().splitlines()[-1])
        print("hostile clients:", json.dumps(tally), flush=True)
    finally:
        stop(proxy, upstream)
    return {
        "upstream": args.upstream,
        "upstream_latency_ms": args.latency_ms,
        "hostile_clients": args.clients,
        "give_up_s": args.give_up_s,
        "period_s": args.period_s,
        "unloaded": unloaded,
        "while_other_hangs": loaded,
        "hostile_outcomes": tally,
        "p99_ratio": round(loaded["p99_ms"] / unloaded["p99_ms"], 2),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--hostile-worker":
        print(json.dumps(asyncio.run(_hostile(*json.loads(sys.argv[2])))))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream-worker":
        serve_upstream(*json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, latency_ms=50.0)
    parser.add_argument("--upstream", default="auto", choices=["auto", "httpx", "litellm"])
    parser.add_argument("--clients", type=int, default=520)
    parser.add_argument("--give-up-s", type=float, default=1.0)
    parser.add_argument("--period-s", type=float, default=0.0, help="0: one request each")
    parser.add_argument("--hang-s", type=float, default=600.0)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    record = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="trouter-slow-upstream-") as tmp:
        record.update(bench(args, Path(tmp)))
    print(f"healthy p99 while the other hangs / unloaded: {record['p99_ratio']}x")
    write_record(record, args.json)


if __name__ == "__main__":
    main()
