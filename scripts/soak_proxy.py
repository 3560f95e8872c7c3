"""Soak benchmark of the proxy (not a test): many requests, memory must stay flat.

Starts the asyncio loopback upstream (``--fault-rate`` of its answers are 500s, which the
proxy must absorb by falling back) and ``trouter serve`` on 127.0.0.1, sends ``--warmup``
requests, then ``--requests`` more at ``--concurrency`` in flight, ``--stream-share`` of them
streamed, every query text new (so the embedding LRU fills to its bound during warm-up and
then churns). Prints errors, p50/p99 and the proxy's RSS after warm-up, after each block
and at the end. Bounded: at most ``--max-seconds`` of load, then it stops and says so.

Usage: ``python scripts/soak_proxy.py [--requests 20000] [--json results/soak.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stack import (  # noqa: E402
    LoadResult,
    add_common_arguments,
    machine,
    router_dir,
    rss_mib,
    run_load,
    soak_bodies,
    start_proxy,
    start_upstream,
    stop,
    write_pool,
    write_record,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, latency_ms=20.0)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--block", type=int, default=2_000, help="RSS is read after each block.")
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--max-seconds", type=float, default=1200.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    record: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    print(json.dumps(record["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="trouter-soak-") as tmp:
        workdir = Path(tmp)
        from trouter.serving.api import load

        model_dir = router_dir(args.model_dir, args.encoder, workdir)
        models = load(model_dir).models
        upstream, base = start_upstream(workdir, args.latency_ms, args.fault_rate)
        proxy = None
        try:
            pool = write_pool(workdir / "pool.yaml", models, base)
            proxy, url = start_proxy(model_dir, pool, workdir, "--workers", str(args.workers))
            total = args.warmup + args.requests
            bodies = soak_bodies(total, args.stream_share)
            endpoint = f"{url}/v1/chat/completions"
            rss = {"start": round(rss_mib(proxy.pid), 1)}
            warm = run_load(endpoint, bodies[: args.warmup], args.concurrency)
            rss["after_warmup"] = round(rss_mib(proxy.pid), 1)
            print(
                f"warm-up: {json.dumps(warm.summary())}; RSS {rss['after_warmup']} MiB", flush=True
            )
            measured = LoadResult()
            blocks = []
            started = time.perf_counter()
            for begin in range(args.warmup, total, args.block):
                if time.perf_counter() - started > args.max_seconds:
                    print(f"stopped after {args.max_seconds:.0f} s of load (--max-seconds)")
                    break
                part = run_load(endpoint, bodies[begin : begin + args.block], args.concurrency)
                measured.latencies += part.latencies
                measured.errors += part.errors
                blocks.append(
                    {
                        "sent": begin + args.block - args.warmup,
                        "rss_mib": round(rss_mib(proxy.pid), 1),
                        **part.summary(),
                    }
                )
                print(json.dumps(blocks[-1]), flush=True)
            measured.wall_s = time.perf_counter() - started
            rss["end"] = round(rss_mib(proxy.pid), 1)
            rss["peak"] = round(rss_mib(proxy.pid, "VmHWM"), 1)
            metrics = _metrics(url)
        finally:
            stop(proxy, upstream)
    summary = measured.summary()
    growth = (rss["end"] - rss["after_warmup"]) / rss["after_warmup"]
    record.update(
        measured=summary,
        streamed_share=args.stream_share,
        upstream_fault_rate=args.fault_rate,
        rss_mib=rss,
        rss_growth_after_warmup=round(growth, 4),
        rss_max_after_warmup=max(b["rss_mib"] for b in blocks) if blocks else None,
        blocks=blocks,
        proxy_metrics=metrics,
    )
    print(
        f"\n{summary['requests']} requests after warm-up, {args.concurrency} concurrent, "
        f"{args.stream_share:.0%} streamed, upstream faults {args.fault_rate:.1%}: "
        f"errors {summary['errors']} {summary['error_kinds']}, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, {summary['throughput_rps']} req/s\n"
        f"proxy RSS: {rss['start']} MiB at start, {rss['after_warmup']} after warm-up, "
        f"{rss['end']} at end ({growth:+.1%}), peak {rss['peak']}\n"
        f"upstream errors absorbed by fallback: {metrics.get('fallbacks', 0):.0f}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    write_record(record, args.json)


def _metrics(url: str) -> dict:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trouter_fallbacks_total":
                out["fallbacks"] = sample.value
            elif sample.name == "trouter_embedding_cache_hit_rate":
                out["embedding_cache_hit_rate"] = sample.value
            elif sample.name == "trouter_embedding_cache_entries":
                out["embedding_cache_entries"] = sample.value
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
