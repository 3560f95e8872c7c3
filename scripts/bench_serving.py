"""Serving benchmark (not a test): routing latency and throughput, and the proxy under load.

Measures, on this machine's CPU:

1. latency of one ``RoutingService.route()`` call *including* encoding the query with MiniLM
   (every query is new: the encoder cache lives in a fresh temporary folder), split into
   tokenisation, encoder forward and the router's own prediction + ranking;
2. batched routing throughput (queries/s), with real encoding and with embeddings already
   cached (the router head alone);
3. the proxy (``trouter serve`` in its own process) under N concurrent requests against the
   local stand-in upstream: errors, p50/p99 latency against calling the stand-in directly,
   and the proxy's peak RSS.

Usage: ``python scripts/bench_serving.py [--model-dir DIR] [--concurrency 200]``. Without
``--model-dir`` a kNN router is fitted on 300 RouterBench training rows first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def _line(label: str, values: list[float]) -> str:
    return f"{label:44s} p50 {_pct(values, 50):8.2f} ms   p99 {_pct(values, 99):8.2f} ms"


def gsm8k_questions(split: str, limit: int) -> list[str]:
    from trouter.config import data_dir

    path = data_dir() / "questions" / f"gsm8k_{split}.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line, _ in zip(fh, range(limit), strict=False)]


def routerbench_test_queries(limit: int) -> list[str]:
    from trouter.data.suites import load_suite

    test = load_suite("routerbench").split("test")
    picks = np.random.default_rng(1).choice(len(test), min(limit, len(test)), replace=False)
    return [test.texts[i] for i in picks]


def fit_default_router(folder: Path) -> Path:
    from trouter.data.suites import load_suite
    from trouter.routers import make_router

    train = load_suite("routerbench").split("train")
    rows = np.sort(np.random.default_rng(0).choice(len(train), 300, replace=False))
    return make_router("knn", k=20, weighting="uniform").fit(train.subset(rows)).save(folder)


# ----- 1 + 2: the Python API -------------------------------------------------------------
def bench_routing(service, label: str, texts: list[str], warmup: int = 5) -> None:
    import torch

    from trouter.encoders import get_encoder

    encoder = get_encoder()
    tokenizer = encoder.model.tokenizer
    for text in texts[:warmup]:
        service.route(f"warm-up {text}")
    total, cpu, encode, tokenise, tokens, head = [], [], [], [], [], []
    for text in texts:
        t0, c0 = time.perf_counter(), time.process_time()
        service.route(text)
        total.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        probe = f"{text} "  # a different text: uncached again, same length
        t0 = time.perf_counter()
        with encoder.transient():
            encoder.encode([probe])
        encode.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ids = tokenizer([probe], truncation=True, max_length=encoder.model.max_seq_length)
        tokenise.append(time.perf_counter() - t0)
        tokens.append(len(ids["input_ids"][0]))
        encoder.encode([text])  # cache it: routing it again measures the router head alone
        t0 = time.perf_counter()
        service.route(text)
        head.append(time.perf_counter() - t0)
    print(
        f"\n[{label}] {len(texts)} uncached queries, median {int(np.median(tokens))} tokens "
        f"(torch threads {torch.get_num_threads()})"
    )
    print(_line("route() total, single query (wall)", total))
    print(_line("  the same, CPU time of all threads", cpu))
    print(_line("  encoder.encode (tokenise + forward + pool)", encode))
    print(_line("  of which tokenisation", tokenise))
    print(_line("  router predict + ranking (cached embedding)", head))


def bench_batched(service, texts: list[str], batch: int) -> None:
    from trouter.encoders import get_encoder

    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        service.route(texts[start : start + batch])
    real = len(texts) / (time.perf_counter() - t0)
    get_encoder().encode(texts)  # now cached: what is left is the router head and ranking
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        service.route(texts[start : start + batch])
    cached = len(texts) / (time.perf_counter() - t0)
    print(f"\n[batched route(), batches of {batch}, {len(texts)} queries]")
    print(f"{'with real encoding':44s} {real:10.0f} queries/s")
    print(f"{'embeddings cached (router head + ranking)':44s} {cached:10.0f} queries/s")


# ----- 3: the proxy under load -----------------------------------------------------------
def wait_http(url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


async def load_test(url: str, model: str, questions: list[str], concurrency: int):
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    answered: dict[str, int] = {}

    async with httpx.AsyncClient(limits=limits, timeout=120.0) as client:

        async def one(question: str) -> None:
            async with gate:
                body = {"model": model, "messages": [{"role": "user", "content": question}]}
                t0 = time.perf_counter()
                try:
                    reply = await client.post(url, json=body)
                except httpx.HTTPError as err:
                    errors.append(type(err).__name__)
                    return
                latencies.append(time.perf_counter() - t0)
                if reply.status_code != 200:
                    errors.append(str(reply.status_code))
                    return
                name = reply.headers.get("x-trouter-model", reply.json().get("model"))
                answered[name] = answered.get(name, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(q) for q in questions))
        wall = time.perf_counter() - t0
    return latencies, errors, answered, wall


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


STANDIN_MAIN = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from standin import StandIn
server = StandIn(models=sys.argv[2].split(",")).start()
print(server.base_url, flush=True)
threading.Event().wait()
"""


def start_process(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with log.open("w") as fh:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)


def bench_proxy(model_dir: Path, questions: list[str], concurrency: int, workdir: Path) -> None:
    """Stand-in, proxy and load generator each in their own process (no shared GIL)."""
    from trouter.local.server import free_port
    from trouter.serving.api import load

    models = load(model_dir).models
    # The same local OpenAI-compatible server the tests use.
    standin = start_process(
        [sys.executable, "-c", STANDIN_MAIN, str(ROOT / "tests"), ",".join(models)],
        workdir / "standin.log",
    )
    port = free_port()
    proxy = None
    try:
        base_url = standin.stdout.readline().strip()
        wait_http(f"{base_url}/models")
        pool_file = workdir / "pool.yaml"
        lines = ["models:"]
        for name in models:
            lines += [
                f"  - name: {name}",
                f"    litellm_model: openai/{name}",
                f"    api_base: {base_url}",
                "    api_key_env: BENCH_KEY",
                "    input_price_per_mtok: 1.0",
                "    output_price_per_mtok: 2.0",
            ]
        pool_file.write_text("\n".join(lines) + "\n")
        command = [
            sys.executable,
            "-c",
            "from trouter.cli import app; app()",
            "serve",
            "--model-dir",
            str(model_dir),
            "--pool",
            str(pool_file),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        env = {**os.environ, "BENCH_KEY": "bench-key-not-secret"}
        proxy = start_process(command, workdir / "proxy.log", env)
        wait_http(f"http://127.0.0.1:{port}/health")
        idle_rss = rss_mib(proxy.pid, "VmRSS")
        direct_url = f"{base_url}/chat/completions"
        proxy_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(
            load_test(proxy_url, "trouter-balanced", [f"warm-up {i}" for i in range(20)], 20)
        )
        runs = {
            "stand-in directly": (direct_url, models[0]),
            "proxy, pool model by name (no routing)": (proxy_url, models[0]),
            "proxy, trouter-balanced (routing)": (proxy_url, "trouter-balanced"),
        }
        print(f"\n[proxy: {len(questions)} requests, {concurrency} concurrent, loopback]")
        base = None
        for label, (url, model) in runs.items():
            lat, errors, answered, wall = asyncio.run(load_test(url, model, questions, concurrency))
            p50, p99 = _pct(lat, 50), _pct(lat, 99)
            added = ""
            if base is not None:
                added = f"  added p50 {p50 - base[0]:+7.1f} ms, p99 {p99 - base[1]:+7.1f} ms"
            base = base or (p50, p99)
            print(
                f"{label:40s} errors {len(errors):3d}  p50 {p50:7.1f} ms  "
                f"p99 {p99:7.1f} ms  {len(lat) / wall:5.0f} req/s{added}"
            )
            if errors:
                print(f"  errors: {sorted(set(errors))}")
            if model.startswith("trouter-"):
                print(f"  answered by: {sorted(answered.items(), key=lambda kv: -kv[1])}")
        print(
            f"{'proxy RSS':40s} {idle_rss:.0f} MiB after start, peak {rss_mib(proxy.pid):.0f} MiB"
        )
    finally:
        for process in (proxy, standin):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=200, help="Single-query latency samples.")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batched-queries", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--skip-proxy", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for routing.")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="trouter-bench-") as tmp:
        workdir = Path(tmp)
        # A fresh, empty embedding cache: every routed query is really encoded.
        os.environ["TROUTER_CACHE_DIR"] = str(workdir / "cache")
        from trouter.serving.api import load

        load_avg = os.getloadavg()
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {load_avg[0]:.2f} at start; python {platform.python_version()}"
        )
        model_dir = args.model_dir
        if model_dir is None:
            t0 = time.perf_counter()
            model_dir = fit_default_router(workdir / "router")
            print(f"fitted knn on 300 RouterBench train rows in {time.perf_counter() - t0:.1f} s")
        service = load(model_dir)
        print(f"router {service.router_name} from {model_dir}, {len(service.models)} models")

        single = gsm8k_questions("test", args.queries)
        bench_routing(service, "GSM8K test questions", single)
        bench_routing(service, "RouterBench test prompts", routerbench_test_queries(args.queries))
        many = gsm8k_questions("train", args.batched_queries + args.requests)
        bench_batched(service, many[: args.batched_queries], args.batch)
        if not args.skip_proxy:
            bench_proxy(model_dir, many[args.batched_queries :], args.concurrency, workdir)
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
