"""Serving benchmark (not a test): routing latency and throughput, and the proxy's overhead.

Measures, on this machine, in one run:

1. ``RoutingService.route()`` for one query, encoding included (every query is new to the
   encoder), p50/p99 wall time;
2. batched ``route()`` throughput (queries/s), every query new;
3. the proxy (``trouter serve``, its own process) against an asyncio loopback upstream that
   answers after ``--latency-ms``: for each concurrency in ``--levels`` the same requests go
   to the upstream directly and through the proxy with each ``--upstream`` (``auto``: the
   aiohttp path, ``httpx``, ``litellm``), so added latency and throughput are ratios within
   one run; the proxy's CPU seconds per request are read from /proc; RSS at start and end.

``--json PATH`` writes every figure with the machine's load average at start and end (the
machine is shared: quote it). ``--table PATH`` prints README's table from such a file.
``--profile DIR`` records the aiohttp-path proxy with py-spy during the highest level and
records where its samples fall (``profile_shares``).

Usage: ``python scripts/bench_serving.py [--encoder static] [--json results/serving.json]``.
Without ``--model-dir`` a kNN router is fitted on 300 RouterBench training rows first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_stack import (  # noqa: E402
    add_common_arguments,
    chat_bodies,
    cpu_s,
    gsm8k_questions,
    machine,
    router_dir,
    rss_mib,
    run_load,
    start_proxy,
    start_upstream,
    stop,
    write_pool,
    write_record,
)

#: How the proxy calls the upstream (``trouter serve --upstream``), and README's names.
MODES = {"auto": "proxy, aiohttp", "httpx": "proxy, httpx", "litellm": "proxy, LiteLLM"}
#: Where a py-spy sample's time goes: the innermost frame matching a pattern names it.
PROFILE_PARTS = [
    (
        "routing (encoder, kNN, ranking)",
        r"trouter/(routers|encoders|static_pooling|serving/api|"
        r"serving/batching|evaluation)|model2vec|tokenizers|numpy|scipy",
    ),
    ("proxy handler and request checks", r"trouter/serving/(proxy|requests)"),
    ("upstream client (trouter)", r"trouter/serving/openai_http|trouter/llm/pool"),
    ("Prometheus metrics", r"prometheus_client|trouter/serving/metrics"),
    ("aiohttp", r"aiohttp|aiohappyeyeballs|multidict|yarl"),
    ("httpx/httpcore", r"httpx|httpcore|anyio|sniffio|h11"),
    ("FastAPI/Starlette", r"fastapi|starlette"),
    ("pydantic", r"pydantic"),
    ("json", r"json/"),
    ("uvicorn (HTTP server, socket writes)", r"uvicorn"),
    ("event loop (uvloop: sockets, callbacks)", r"asyncio|Runner\.run|threading|contextlib"),
]


def ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 3)


def bench_route(service, texts: list[str]) -> dict:
    for text in texts[:20]:
        service.route(f"warm-up {text}")
    wall, cpu = [], []
    for i, text in enumerate(texts):
        query = f"{text} [{i}]"  # new to the encoder and to its query cache
        t0, c0 = time.perf_counter(), time.process_time()
        service.route(query)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    repeat = []
    for i, text in enumerate(texts[:200]):
        t0 = time.perf_counter()
        service.route(f"{text} [{i}]")  # routed above: its embedding comes from the LRU
        repeat.append(time.perf_counter() - t0)
    return {
        "queries": len(texts),
        "p50_ms": ms(wall, 50),
        "p99_ms": ms(wall, 99),
        "cpu_p50_ms": ms(cpu, 50),
        "repeated_p50_ms": ms(repeat, 50),
    }


def bench_batched(service, texts: list[str], batch: int, profile: bool = False) -> dict:
    texts = [f"{t} <{i}>" for i, t in enumerate(texts)]
    service.route(texts[:batch])
    texts = texts[batch:]
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        service.route(texts[start : start + batch])
    out = {
        "batch": batch,
        "queries": len(texts),
        "qps": round(len(texts) / (time.perf_counter() - t0)),
    }
    if profile:  # after the timing, on texts new again: where a batch's time goes
        out["profile"] = cprofile_shares(
            lambda: [service.route([f"{t} #" for t in texts[i : i + batch]]) for i in (0, batch)]
        )
    return out


def cprofile_shares(run, top: int = 8) -> dict[str, float]:
    """Share of the run's time spent in each of its ``top`` costliest functions (own time)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, _, own, cumulative, _)}
    total = sum(own for _, _, own, _, _ in stats.values()) or 1.0
    costliest = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        f"{Path(file).name}:{name}" if file != "~" else name: round(own / total, 3)
        for (file, _, name), (_, _, own, _, _) in costliest
    }


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--format",
    ]
    command += ["raw", "--rate", "200", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_shares(raw: Path) -> dict[str, float]:
    """Share of py-spy's samples (``--format raw``) per part of the stack, largest first."""
    import re

    parts = [(name, re.compile(pattern)) for name, pattern in PROFILE_PARTS]
    counts: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        part = next(
            (name for frame in reversed(frames) for name, rx in parts if rx.search(frame)),
            "other",
        )
        counts[part] = counts.get(part, 0) + int(n)
    total = sum(counts.values()) or 1
    return {k: round(v / total, 3) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def bench_proxy(model_dir: Path, models: list[str], args, workdir: Path) -> dict:
    upstream, base = start_upstream(workdir, args.latency_ms)
    pool = write_pool(workdir / "pool.yaml", models, base)
    proxies = {}
    try:
        for mode in MODES:
            proxies[mode] = start_proxy(model_dir, pool, workdir, "--upstream", mode)
        rss_start = {mode: round(rss_mib(p.pid), 1) for mode, (p, _) in proxies.items()}
        questions = gsm8k_questions("train", 7000)
        warm = chat_bodies(questions[:300], "trouter-balanced")
        for _process, url in proxies.values():
            run_load(f"{url}/v1/chat/completions", warm, 50)
        direct_url = f"{base}/chat/completions"
        levels = []
        cursor = 300
        for concurrency in args.levels:
            n = max(args.min_requests, concurrency * args.rounds)
            texts = questions[cursor : cursor + n]
            cursor = (cursor + n) % (len(questions) - n)
            row = {"concurrency": concurrency, "requests": n}
            c0, up0 = time.process_time(), cpu_s(upstream.pid)
            row["direct"] = run_load(
                direct_url, chat_bodies(texts, models[0]), concurrency
            ).summary()
            # what the rest of the stack costs: the proxy shares these two cores with it
            row["direct"]["client_cpu_ms_per_request"] = round(
                (time.process_time() - c0) * 1000 / n, 3
            )
            row["direct"]["upstream_cpu_ms_per_request"] = round(
                (cpu_s(upstream.pid) - up0) * 1000 / n, 3
            )
            for mode, (process, url) in proxies.items():
                spy = None
                if args.profile and mode == "auto" and concurrency == max(args.levels):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = py_spy(process.pid, 15, args.profile / "proxy-auto.raw")
                c0 = cpu_s(process.pid)
                result = run_load(
                    f"{url}/v1/chat/completions",
                    chat_bodies(texts, "trouter-balanced"),
                    concurrency,
                ).summary()
                result["cpu_ms_per_request"] = round((cpu_s(process.pid) - c0) * 1000 / n, 3)
                result["added_p50_ms"] = round(result["p50_ms"] - row["direct"]["p50_ms"], 2)
                result["throughput_ratio"] = round(
                    result["throughput_rps"] / row["direct"]["throughput_rps"], 3
                )
                row[f"proxy_{mode}"] = result
                if spy is not None:
                    spy.wait(timeout=60)
            levels.append(row)
            print(json.dumps(row), flush=True)
        rss_end = {mode: round(rss_mib(p.pid), 1) for mode, (p, _) in proxies.items()}
        out = {
            "upstream_latency_ms": args.latency_ms,
            "levels": levels,
            "rss_mib": {"start": rss_start, "end": rss_end},
        }
        if args.profile and (args.profile / "proxy-auto.raw").is_file():
            out["profile_auto"] = {
                "concurrency": max(args.levels),
                "shares": profile_shares(args.profile / "proxy-auto.raw"),
            }
        return out
    finally:
        stop(*(p for p, _ in proxies.values()), upstream)


def print_table(path: Path) -> None:
    """README's table from a ``--json`` file."""
    data = json.loads(path.read_text())
    route, batched = data["route"], data["batched"]
    print(
        f"Machine: {data['machine']['cpus']} CPUs, load average "
        f"{data['machine']['load_average'][0]} at start, {data['load_average_end'][0]} at end; "
        f"{data['router']} router, {data['encoder']} encoder.\n"
    )
    print(f"- `route()`, one new query: p50 {route['p50_ms']} ms, p99 {route['p99_ms']} ms")
    print(f"- batched `route()` (batches of {batched['batch']}): {batched['qps']:,} queries/s")
    if "profile" in batched:
        shares = ", ".join(f"`{k}` {v:.0%}" for k, v in batched["profile"].items())
        print(f"  (cProfile, own time: {shares})")
    print()
    proxy = data["proxy"]
    print(f"Upstream answers after {proxy['upstream_latency_ms']:g} ms.\n")
    columns = "concurrent|path|p50 ms|p99 ms|added p50 ms|req/s|vs direct|CPU ms/req|errors"
    print("| " + " | ".join(columns.split("|")) + " |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in proxy["levels"]:
        paths = [("direct", "direct")] + [(f"proxy_{m}", label) for m, label in MODES.items()]
        for key, label in paths:
            if key not in row:
                continue
            r = row[key]
            added = f"{r['added_p50_ms']:+.1f}" if "added_p50_ms" in r else ""
            ratio = f"{r['throughput_ratio']:.2f}" if "throughput_ratio" in r else ""
            cpu = f"{r['cpu_ms_per_request']:.2f}" if "cpu_ms_per_request" in r else ""
            print(
                f"| {row['concurrency']} | {label} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{added} | {r['throughput_rps']:.0f} | {ratio} | {cpu} | {r['errors']} |"
            )
    for row in proxy["levels"]:
        direct = row["direct"]
        if "client_cpu_ms_per_request" in direct:
            print(
                f"\nAt {row['concurrency']} concurrent, calling the upstream directly cost the "
                f"load generator {direct['client_cpu_ms_per_request']:.2f} ms and the upstream "
                f"{direct['upstream_cpu_ms_per_request']:.2f} ms of CPU per request.",
                end="",
            )
    print()
    rss = proxy["rss_mib"]
    moves = [f"{MODES[m][7:]} {rss['start'][m]} -> {rss['end'][m]}" for m in rss["start"]]
    print("\nProxy RSS (MiB), start -> end: " + ", ".join(moves))
    if "profile_auto" in proxy:
        profile = proxy["profile_auto"]
        shares = ", ".join(f"{k} {v:.0%}" for k, v in profile["shares"].items() if v >= 0.01)
        print(f"\npy-spy, aiohttp path at {profile['concurrency']} concurrent: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, latency_ms=50.0)
    parser.add_argument("--queries", type=int, default=1000, help="Single-query samples.")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--batched-queries", type=int, default=20480)
    parser.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 50, 200]
    )
    parser.add_argument(
        "--rounds", type=int, default=20, help="Requests per level = rounds x concurrency."
    )
    parser.add_argument("--min-requests", type=int, default=200)
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--table", type=Path, default=None, help="Print README's table from JSON.")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output folder.")
    args = parser.parse_args()
    if args.table:
        print_table(args.table)
        return

    import torch

    torch.set_num_threads(1)  # as `trouter serve` does
    record = {"machine": machine(), "command": " ".join(sys.argv)}
    print(json.dumps(record["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="trouter-bench-") as tmp:
        workdir = Path(tmp)
        from trouter.serving.api import load

        model_dir = router_dir(args.model_dir, args.encoder, workdir)
        service = load(model_dir)
        record.update(router=service.router_name, encoder=service.encoder)
        texts = gsm8k_questions("test", 1319)
        record["route"] = bench_route(service, (texts * 2)[: args.queries])
        print("route()", json.dumps(record["route"]), flush=True)
        many = gsm8k_questions("train", 7473)
        batched_texts = (many * (1 + args.batched_queries // len(many)))[
            : args.batched_queries + args.batch
        ]
        record["batched"] = bench_batched(
            service, batched_texts, args.batch, profile=args.profile is not None
        )
        print("batched", json.dumps(record["batched"]), flush=True)
        if not args.skip_proxy:
            record["proxy"] = bench_proxy(model_dir, service.models, args, workdir)
    write_record(record, args.json)
    if args.profile and (args.profile / "proxy-auto.raw").is_file():
        print(f"py-spy stacks in {args.profile / 'proxy-auto.raw'}")


if __name__ == "__main__":
    main()
