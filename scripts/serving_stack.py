"""What the serving benchmarks share: an upstream, a proxy, a load generator, /proc readings.

Every process listens on 127.0.0.1 only. The upstream (``loopback_upstream.py``) and the
proxy (``trouter serve``) run in their own processes, so the load generator here (one asyncio
aiohttp client) never shares a GIL with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def add_common_arguments(parser: argparse.ArgumentParser, latency_ms: float) -> None:
    """The options every serving benchmark takes: the router, the upstream, the record."""
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--encoder", default="static", help="For the fitted default router.")
    parser.add_argument("--latency-ms", type=float, default=latency_ms)
    parser.add_argument("--json", type=Path, default=None, help="Write every figure here.")


def bench_knn(encoder: str = "static"):
    """The benchmarks' default router: a kNN fitted on 300 RouterBench training rows (the
    same rows every run); returns (router, rows)."""
    from trouter.data.suites import load_suite
    from trouter.routers import make_router

    train = load_suite("routerbench").split("train")
    rows = train.subset(np.sort(np.random.default_rng(0).choice(len(train), 300, replace=False)))
    return make_router("knn", k=20, weighting="uniform", encoder=encoder).fit(rows), rows


def router_dir(model_dir: Path | None, encoder: str, workdir: Path) -> Path:
    """``--model-dir``, or :func:`bench_knn` saved in ``workdir``."""
    if model_dir is not None:
        return model_dir
    return bench_knn(encoder)[0].save(workdir / "router")


def write_record(record: dict, path: Path | None) -> None:
    """The run's record, with the load average at its end (the machine is shared)."""
    record["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def free_port() -> int:
    from trouter.local.server import free_port as pick

    return pick()


def wait_http(url: str, timeout: float = 180.0, process: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with log.open("w") as fh:
        return subprocess.Popen(command, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True)


def start_upstream(workdir: Path, latency_ms: float, fault_rate: float = 0.0):
    port = free_port()
    command = [
        sys.executable,
        str(HERE / "loopback_upstream.py"),
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--fault-rate",
        str(fault_rate),
    ]
    process = start(command, workdir / f"upstream-{port}.log")
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(f"{base}/models", process=process)
    return process, base


def write_pool(path: Path, models: list[str], base_url: str) -> Path:
    from trouter.llm.pool import Pool

    return Pool.openai_compatible(models, base_url, "BENCH_KEY", 1.0, 2.0).save(path)


def start_proxy(model_dir: Path, pool: Path, workdir: Path, *extra: str):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "trouter.cli",
        "serve",
        "--model-dir",
        str(model_dir),
        "--pool",
        str(pool),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]
    env = {**os.environ, "BENCH_KEY": "bench-key-not-secret"}
    process = start(command, workdir / f"proxy-{port}.log", env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", process=process)
    return process, base


def _pids(pid: int) -> list[int]:
    """The process and its children (``--workers`` processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(p for c in children for p in _pids(int(c)))]


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory (VmRSS; VmHWM = peak) of a process and its children, in MiB."""
    total = 0.0
    for p in _pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(f"{field_name}:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def add(self, other: LoadResult) -> None:
        """Count ``other`` (a later block of the same load) in this one."""
        self.latencies += other.latencies
        self.errors += other.errors
        for name, count in other.answered.items():
            self.answered[name] = self.answered.get(name, 0) + count
        self.wall_s += other.wall_s

    def summary(self) -> dict:
        ms = np.asarray(self.latencies) * 1000 if self.latencies else np.asarray([np.nan])
        return {
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "error_kinds": sorted(set(self.errors)),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "throughput_rps": round(len(self.latencies) / self.wall_s, 1) if self.wall_s else 0,
        }


async def _load(url: str, bodies: list[dict], concurrency: int, timeout: float) -> LoadResult:
    # aiohttp, not httpx: at 200 in flight httpx's pool costs the load generator ~16 ms of CPU
    # per request on this machine (aiohttp: 0.6 ms), which starved every level it measured.
    import aiohttp

    result = LoadResult()
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as client:

        async def one(body: dict) -> None:
            t0 = time.perf_counter()
            try:
                async with client.post(url, json=body) as reply:
                    payload = await reply.read()
                    status = reply.status
                    name = reply.headers.get("x-trouter-model", body["model"])
            except (aiohttp.ClientError, TimeoutError) as err:
                result.errors.append(type(err).__name__)
                return
            if status == 200 and body.get("stream"):
                text = payload.decode()
                if not text.rstrip().endswith("data: [DONE]") or '"error"' in text:
                    status = -1  # a stream that broke or carried an error event
            if status != 200:
                result.errors.append(f"HTTP {status}" if status > 0 else "broken stream")
                return
            result.latencies.append(time.perf_counter() - t0)
            result.answered[name] = result.answered.get(name, 0) + 1

        async def worker() -> None:
            while not queue.empty():
                await one(queue.get_nowait())

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - t0
    return result


def run_load(url: str, bodies: list[dict], concurrency: int, timeout: float = 120.0) -> LoadResult:
    """Send every body (``stream`` honoured) with at most ``concurrency`` in flight."""
    return asyncio.run(_load(url, bodies, concurrency, timeout))


def chat_bodies(questions: list[str], model: str, stream_share: float = 0.0) -> list[dict]:
    """One chat request per question; ``stream_share`` of them, evenly spread, streamed."""
    bodies = []
    for i, question in enumerate(questions):
        body = {"model": model, "messages": [{"role": "user", "content": question}]}
        if int((i + 1) * stream_share) > int(i * stream_share):
            body["stream"] = True
        bodies.append(body)
    return bodies


def soak_bodies(count: int, stream_share: float) -> list[dict]:
    """``count`` balanced-policy chat bodies on GSM8K's training questions, numbered."""
    texts = numbered(gsm8k_questions("train", 7473), 0, count)
    return chat_bodies(texts, "trouter-balanced", stream_share)


def numbered(questions: list[str], start: int, count: int) -> list[str]:
    """Query texts ``start`` .. ``start + count - 1``: the questions in turn, each numbered so
    that none repeats (a repeated query would be answered by the routing cache)."""
    return [f"{questions[k % len(questions)]} (#{k})" for k in range(start, start + count)]


def t_interval(values) -> dict[str, float | None]:
    """Mean and 95% Student-t interval of ``values`` (no interval from fewer than two)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None}
    half = float(stats.t.ppf(0.975, len(values) - 1) * stats.sem(values))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def gsm8k_questions(split: str, limit: int) -> list[str]:
    from trouter.config import data_dir

    path = data_dir() / "questions" / f"gsm8k_{split}.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["question"] for line, _ in zip(fh, range(limit), strict=False)]


def stop(*processes: subprocess.Popen | None) -> None:
    for process in processes:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
