"""Throughput of the offline pool's llama.cpp servers on this CPU: one slot against several.

llama-cpp-python's server answers one request at a time (a process-wide lock), so "slots"
here are server processes of the same model. Each layout answers the same GSM8K prompts
(temperature 0, a fixed token cap) and reports the aggregate output tokens per second:

- ``1x<cores>``: one process using every core, one request in flight;
- ``<cores>x1``: one single-threaded process per core, one request in flight on each;
- ``1x1``: one single-threaded process (what one core gives).

Usage: python scripts/bench_llama_slots.py [--model NAME] [--prompts N] [--max-tokens T]
       [--json results/local-pool/throughput.json]
Needs the model fetched (`trouter models fetch`). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path

import httpx

from trouter.evaluation.real_questions import load_gsm8k
from trouter.local.catalogue import get_local_model
from trouter.local.server import serve_models


async def _answer_all(bases: list[str], model: str, prompts: list[str], max_tokens: int) -> dict:
    """Every prompt once, spread round-robin over ``bases`` (one request in flight each)."""
    queues = [prompts[i :: len(bases)] for i in range(len(bases))]
    tokens = 0

    async def worker(base: str, mine: list[str], client: httpx.AsyncClient) -> None:
        nonlocal tokens
        for prompt in mine:
            response = await client.post(
                f"{base}/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                },
            )
            response.raise_for_status()
            tokens += int(response.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=600.0) as client:
        await asyncio.gather(*(worker(b, q, client) for b, q in zip(bases, queues, strict=True)))
    seconds = time.perf_counter() - start
    return {"output_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2)}  # fmt: skip


def measure(model_name: str, processes: int, threads: int, prompts: list[str], cap: int) -> dict:
    model = get_local_model(model_name)
    with serve_models([model] * processes, n_threads=threads, n_ctx=2048) as running:
        bases = [r.api_base for r in running]
        asyncio.run(_answer_all(bases, model.name, prompts[:1], 8))  # warm-up (load, caches)
        result = asyncio.run(_answer_all(bases, model.name, prompts, cap))
    return {"layout": f"{processes}x{threads}", "processes": processes, "threads": threads,
            **result}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    prompts = [q.prompt for q in load_gsm8k(limit=args.prompts)]
    layouts = [(1, cores), (cores, 1), (1, 1)]
    rows = []
    for processes, threads in layouts:
        row = measure(args.model, processes, threads, prompts, args.max_tokens)
        print(json.dumps(row), flush=True)
        rows.append(row)
    record = {
        "command": "python scripts/bench_llama_slots.py "
        f"--model {args.model} --prompts {args.prompts} --max-tokens {args.max_tokens}",
        "machine": {"cpus": cores, "cpu": platform.machine(), "load_average": os.getloadavg()},
        "model": args.model,
        "layouts": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
