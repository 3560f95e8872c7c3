"""The proxy with and without its feedback loop, in one run (a benchmark, not a test).

One ``online`` router (base: kNN, k=20, static encoder, fitted on 300 RouterBench training
rows, as ``bench_serving.py`` fits its kNN) is served twice, each proxy in its own process
against the same asyncio loopback upstream: ``plain`` (``--model-dir``), and ``learning``
(``--store sqlite:///... --learn``: every routed decision logged, feedback folded). Each
round (one per level given) starts both proxies afresh, in turns (on this machine the one
started first serves faster), warms them, and sends the same GSM8K questions through both,
in turns (with ``--blocks K``, in K parts served A B, B A, A B, ..., so that a slow spell
of a shared machine falls on both); reported per proxy: throughput, p50, errors and CPU ms
per request (from /proc). Then one feedback post per logged request goes to the learning
proxy, and its CPU per post and the events it folded are reported. A level given several
times is a round each; the summary gives, per level, the mean throughput ratio and added
CPU over its rounds with 95% Student-t intervals (one short round on a shared machine is
too noisy to read alone).

Usage: ``python scripts/bench_feedback_proxy.py [--levels 1,50,200] [--blocks K] [--control]
[--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stack import (  # noqa: E402
    LoadResult,
    bench_knn,
    chat_bodies,
    cpu_s,
    gsm8k_questions,
    machine,
    numbered,
    run_load,
    start_proxy,
    start_upstream,
    stop,
    t_interval,
    write_pool,
    write_record,
)

QUESTIONS = 7473  # the GSM8K training questions the load draws from (numbered: none repeats)


def online_dir(workdir: Path) -> tuple[Path, list[str]]:
    """An online router around the benchmarks' kNN, saved in ``workdir``."""
    from trouter.routers.online import OnlineRouter

    base, rows = bench_knn()
    router = OnlineRouter.around(base, rows)
    return router.save(workdir / "online"), list(router.models_)


async def _post_all(url: str, bodies: list[dict], concurrency: int) -> dict[int, int]:
    import aiohttp

    codes: dict[int, int] = {}
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(body: dict) -> None:
            async with gate, session.post(url, json=body) as reply:
                await reply.read()
                codes[reply.status] = codes.get(reply.status, 0) + 1

        await asyncio.gather(*(one(b) for b in bodies))
    return codes


def metric(base: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,50,200")
    parser.add_argument("--requests", type=int, default=600, help="Per level and proxy.")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--blocks", type=int, default=1,
                        help="Serve a round's requests in this many parts, in turns.")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--control", action="store_true",
                        help="An A/A run: the 'learning' slot served plain too (the design's "
                             "own bias; no feedback phase).")  # fmt: skip
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    record = {"machine": machine(), "upstream_latency_ms": args.latency_ms, "levels": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir, models = online_dir(workdir)
        upstream, upstream_base = start_upstream(workdir, args.latency_ms)
        pool = write_pool(workdir / "pool.yaml", models, upstream_base)
        store = f"sqlite:///{workdir / 'store.db'}"
        extra = {"plain": (), "learning": () if args.control else ("--store", store, "--learn")}
        record["control"] = args.control
        questions, cursor = gsm8k_questions("train", QUESTIONS), 0
        proxies: dict = {}
        try:
            for i, level in enumerate(levels):
                # the proxy started first serves measurably faster on this machine (an A/A
                # run of two plain proxies: 0.93 and, started the other way round, 1.02),
                # so every round starts both afresh, in turns, and loads them in turns
                order = list(extra) if i % 2 == 0 else list(reversed(extra))
                proxies = {name: start_proxy(model_dir, pool, workdir, *extra[name])
                           for name in order}  # fmt: skip
                for _, base in proxies.values():
                    warm = numbered(questions, cursor, 200)
                    run_load(f"{base}/v1/chat/completions", chat_bodies(warm, "trouter"), 50)
                    cursor += 200
                texts = numbered(questions, cursor, args.requests)
                row = measure_round(proxies, order, level, texts, args.blocks)
                cursor += args.requests
                record["levels"].append(row)
                print(json.dumps(row), flush=True)
                if i < len(levels) - 1:
                    stop(*(process for process, _ in proxies.values()))
            record["summary"] = summarise(record["levels"])
            for row in record["summary"]:
                print(json.dumps(row), flush=True)
            if not args.control:
                record["feedback"] = feedback_phase(proxies["learning"], store)
                print(json.dumps(record["feedback"]), flush=True)
        finally:
            stop(*(process for process, _ in proxies.values()), upstream)
    write_record(record, args.json)


def measure_round(proxies: dict, order: list[str], level: int, texts: list[str],
                  blocks: int = 1) -> dict:  # fmt: skip
    """The same texts through each proxy at ``level`` in flight, in ``blocks`` parts served
    in turns A B, B A, A B, ... (a slow minute of a shared machine then falls on both)."""
    row: dict = {"concurrency": level, "requests": len(texts), "started_first": order[0],
                 "blocks": blocks}  # fmt: skip
    loads = {name: LoadResult() for name in order}
    cpu = dict.fromkeys(order, 0.0)
    size = -(-len(texts) // blocks)
    for i in range(blocks):
        part = chat_bodies(texts[i * size : (i + 1) * size], "trouter-balanced")
        for name in order if i % 2 == 0 else reversed(order):
            process, base = proxies[name]
            c0 = cpu_s(process.pid)
            loads[name].add(run_load(f"{base}/v1/chat/completions", part, level))
            cpu[name] += cpu_s(process.pid) - c0
    for name in order:
        row[name] = loads[name].summary()
        row[name]["cpu_ms_per_request"] = round(cpu[name] * 1000 / len(texts), 3)
    row["throughput_ratio"] = round(
        row["learning"]["throughput_rps"] / row["plain"]["throughput_rps"], 3
    )
    row["added_cpu_ms_per_request"] = round(
        row["learning"]["cpu_ms_per_request"] - row["plain"]["cpu_ms_per_request"], 3
    )
    return row


def summarise(levels: list[dict]) -> list[dict]:
    """Per concurrency: the mean throughput ratio and added CPU over its rounds, with 95%
    Student-t intervals (one round is too noisy on a shared machine to read alone)."""
    out = []
    for level in sorted({row["concurrency"] for row in levels}):
        rows = [row for row in levels if row["concurrency"] == level]
        entry: dict = {"concurrency": level, "rounds": len(rows)}
        for key in ("throughput_ratio", "added_cpu_ms_per_request"):
            interval = t_interval([row[key] for row in rows])
            entry[key] = {k: None if v is None else round(v, 3) for k, v in interval.items()}
        out.append(entry)
    return out


def feedback_phase(proxy, store_url: str) -> dict:
    from trouter.store import Store

    process, base = proxy
    time.sleep(1.0)  # the log's last batch
    store = Store.open(store_url)
    ids = [r[0] for r in store.backend.fetchall("SELECT request_id FROM decisions")]
    store.close()
    bodies = [{"request_id": rid, "score": (i % 5) / 4} for i, rid in enumerate(ids)]
    c0, t0 = cpu_s(process.pid), time.perf_counter()
    codes = asyncio.run(_post_all(f"{base}/v1/feedback", bodies, 20))
    wall = time.perf_counter() - t0
    deadline = time.time() + 30
    while metric(base, "trouter_learned_events_total") < len(ids) and time.time() < deadline:
        time.sleep(0.2)
    return {
        "posts": len(bodies),
        "status_codes": codes,
        "posts_per_s": round(len(bodies) / wall, 1),
        "cpu_ms_per_post": round((cpu_s(process.pid) - c0) * 1000 / max(len(bodies), 1), 3),
        "events_folded": metric(base, "trouter_learned_events_total"),
        "log_dropped": metric(base, "trouter_decision_log_dropped_total"),
        "log_written": metric(base, "trouter_decision_log_written_total"),
    }


if __name__ == "__main__":
    main()
