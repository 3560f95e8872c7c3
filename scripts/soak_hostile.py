"""Soak of the proxy with hostile clients mixed in (not a test): the others must see no error.

Starts the loopback upstream and ``trouter serve`` on 127.0.0.1 (``serving_stack.py``) and
sends ``--warmup`` then ``--requests`` jobs, ``--concurrency`` well-behaved ones in flight
(see :func:`warm_up` for the warm-up's).
``--hostile-share`` of the jobs, evenly spread, are hostile clients on raw sockets, cycling
through :data:`HOSTILE`: a head sent one byte per second, a body sent one byte per second, a
1 MB header, a 2 MB body, ``text/plain``, a foreign ``Origin``, a foreign ``Host``, and
clients that leave mid-body, while their non-streamed request is answered, and after the
first chunk of a stream. Hostile clients run beside the load (they hold no well-behaved
slot). The well-behaved clients use the official ``openai`` client (no retries), a share of
them streamed; their errors, p50 and p99 are counted. The proxy's RSS and open descriptors
are read once every client of the warm-up has finished, after each block, and at the end.

Usage: ``python scripts/soak_hostile.py [--hostile-share 0.05] [--json results/soak-hostile.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_clients import HOSTILE, PATH, Target  # noqa: E402
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


@dataclass
class Tally:
    polite: LoadResult = field(default_factory=LoadResult)
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)

    def hostile_unexpected(self) -> int:
        return sum(
            n
            for kind, outcomes in self.hostile.items()
            for outcome, n in outcomes.items()
            if outcome not in HOSTILE[kind][1]
        )


async def _polite(client, body: dict, tally: Tally) -> None:
    """One well-behaved request with the ``openai`` client; any failure is an error."""
    import httpx
    import openai

    t0 = time.perf_counter()
    try:
        reply = await client.chat.completions.create(**body)
        if body.get("stream"):
            text = ""
            async for chunk in reply:
                text += "".join(c.delta.content or "" for c in chunk.choices)
        else:
            text = reply.choices[0].message.content if reply.choices else ""
    except (openai.APIError, httpx.HTTPError) as err:
        status = getattr(err, "status_code", None)
        tally.polite.errors.append(type(err).__name__ + (f" {status}" if status else ""))
        return
    if not text:
        tally.polite.errors.append("empty answer")
        return
    tally.polite.latencies.append(time.perf_counter() - t0)


async def _hostile(kind: str, target: Target, tally: Tally) -> None:
    outcome = await HOSTILE[kind][0](target)
    counts = tally.hostile.setdefault(kind, {})
    counts[outcome] = counts.get(outcome, 0) + 1


def plan(bodies: list[dict], hostile_share: float) -> list[dict | str]:
    """``bodies`` with ``hostile_share`` of the positions, evenly spread, given to hostile
    clients (their kind, cycling through :data:`HOSTILE`)."""
    kinds = itertools.cycle(HOSTILE)
    return [
        next(kinds) if int((i + 1) * hostile_share) > int(i * hostile_share) else body
        for i, body in enumerate(bodies)
    ]


async def run_jobs(
    client, jobs: list, target: Target, concurrency: int, tally: Tally, hostile_tally: Tally
) -> set:
    """Well-behaved jobs with ``concurrency`` in flight, counted in ``tally``; hostile ones
    started beside them, counted in ``hostile_tally`` when they end. Returns those still
    running."""
    queue = iter(jobs)
    hostile: set[asyncio.Task] = set()

    async def worker() -> None:
        for job in queue:
            if isinstance(job, str):
                task = asyncio.create_task(_hostile(job, target, hostile_tally))
                hostile.add(task)
                task.add_done_callback(hostile.discard)
            else:
                await _polite(client, job, tally)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return hostile


def polite_client(base_url: str, concurrency: int):
    import httpx
    import openai

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return openai.AsyncOpenAI(
        base_url=f"{base_url}/v1",
        api_key="unused-on-loopback",
        max_retries=0,
        timeout=120.0,
        http_client=httpx.AsyncClient(limits=limits),
    )


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _readings(pid: int | None) -> dict:
    if pid is None:
        return {}
    return {"rss_mib": round(rss_mib(pid), 1), "open_fds": open_fds(pid)}


async def warm_up(base_url: str, jobs: list, target: Target, concurrency: int, tally: Tally):
    """The warm-up fills the proxy's bounded caches quickly: its well-behaved requests go
    through the aiohttp load generator (a tenth of the ``openai`` client's CPU per request,
    in its own thread), its hostile clients all start at once beside them."""
    polite = [job for job in jobs if not isinstance(job, str)]
    hostile = [_hostile(job, target, tally) for job in jobs if isinstance(job, str)]
    url = f"{base_url}{PATH}"
    load = asyncio.to_thread(run_load, url, polite, concurrency)
    tally.polite, *_ = await asyncio.gather(load, *hostile)


async def soak(
    base_url: str,
    jobs: list,
    target: Target,
    *,
    warmup: int,
    block: int,
    concurrency: int,
    max_seconds: float,
    pid: int | None = None,
) -> dict:
    """Run ``jobs`` (see :func:`plan`): the warm-up, then blocks; the proxy process ``pid``
    is read after the warm-up's last client, after each block and after the last client."""
    client = polite_client(base_url, concurrency)
    warm, tally = Tally(), Tally()
    async with client:
        await warm_up(base_url, jobs[:warmup], target, concurrency, warm)
        after_warmup = _readings(pid)
        blocks, running, started = [], set(), time.perf_counter()
        for begin in range(warmup, len(jobs), block):
            if time.perf_counter() - started > max_seconds:
                print(f"stopped after {max_seconds:.0f} s of load (--max-seconds)", flush=True)
                break
            part = Tally()
            t0 = time.perf_counter()
            chunk = jobs[begin : begin + block]
            running |= await run_jobs(client, chunk, target, concurrency, part, tally)
            part.polite.wall_s = time.perf_counter() - t0
            tally.polite.latencies += part.polite.latencies
            tally.polite.errors += part.polite.errors
            blocks.append(
                {"sent": begin + block - warmup, **_readings(pid), **part.polite.summary()}
            )
            print(json.dumps(blocks[-1]), flush=True)
        tally.polite.wall_s = time.perf_counter() - started
        await asyncio.gather(*running)
        tail_s = time.perf_counter() - started - tally.polite.wall_s
    await asyncio.sleep(1.0)  # the proxy closes the last hostile connections
    return {
        "warmup": {**warm.polite.summary(), "hostile": warm.hostile},
        "measured": tally.polite.summary(),
        "hostile": tally.hostile,
        "hostile_tail_s": round(tail_s, 1),
        "hostile_clients": sum(sum(v.values()) for v in tally.hostile.values()),
        "hostile_unexpected_outcomes": tally.hostile_unexpected() + warm.hostile_unexpected(),
        "after_warmup": after_warmup,
        "end": _readings(pid),
        "blocks": blocks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, latency_ms=50.0)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--warmup", type=int, default=4_500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--hostile-share", type=float, default=0.05)
    parser.add_argument("--block", type=int, default=1_000, help="RSS is read after each block.")
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    parser.add_argument("--body-timeout", type=float, default=30.0)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    args = parser.parse_args()

    record: dict = {"machine": machine(), "command": " ".join(sys.argv)}
    print(json.dumps(record["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="trouter-soak-") as tmp:
        workdir = Path(tmp)
        from trouter.serving.api import load

        model_dir = router_dir(args.model_dir, args.encoder, workdir)
        upstream, base = start_upstream(workdir, args.latency_ms, args.fault_rate)
        proxy = None
        try:
            pool = write_pool(workdir / "pool.yaml", load(model_dir).models, base)
            limits = ("--header-timeout", str(args.header_timeout))
            limits += ("--body-timeout", str(args.body_timeout))
            proxy, url = start_proxy(model_dir, pool, workdir, *limits)
            bodies = soak_bodies(args.warmup + args.requests, args.stream_share)
            jobs = plan(bodies, args.hostile_share)
            target = Target(int(url.rsplit(":", 1)[1]), args.header_timeout, args.body_timeout)
            record["start"] = _readings(proxy.pid)
            run = soak(
                url,
                jobs,
                target,
                warmup=args.warmup,
                block=args.block,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                pid=proxy.pid,
            )
            record.update(asyncio.run(run))
            record["rss_peak_mib"] = round(rss_mib(proxy.pid, "VmHWM"), 1)
            record["proxy_metrics"] = proxy_counts(url)
            record["proxy_alive"] = proxy.poll() is None
        finally:
            stop(proxy, upstream)
    _report(record, args)
    write_record(record, args.json)


def proxy_counts(url: str) -> dict:
    """Chat requests by status and client-aborted requests, from the proxy's ``/metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict = {"requests_by_status": {}, "client_aborted": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "trouter_requests_total":
                status = sample.labels["status"]
                counts["requests_by_status"][status] = (
                    counts["requests_by_status"].get(status, 0) + sample.value
                )
            elif sample.name == "trouter_client_aborted_requests_total":
                counts["client_aborted"] += sample.value
    return counts


def _report(record: dict, args: argparse.Namespace) -> None:
    before, after = record["after_warmup"]["rss_mib"], record["end"]["rss_mib"]
    record["rss_growth_after_warmup"] = round((after - before) / before, 4)
    names = ("concurrency", "stream_share", "hostile_share", "fault_rate", "latency_ms")
    names += ("header_timeout", "body_timeout")
    record["settings"] = {name: getattr(args, name) for name in names}
    measured = record["measured"]
    print(
        f"\n{measured['requests']} well-behaved requests after warm-up ({args.concurrency} in "
        f"flight, {args.stream_share:.0%} streamed) beside {record['hostile_clients']} hostile "
        f"clients: errors {measured['errors']} {measured['error_kinds']}, p50 "
        f"{measured['p50_ms']} ms, p99 {measured['p99_ms']} ms, {measured['throughput_rps']} "
        f"req/s\nhostile outcomes: {json.dumps(record['hostile'])}; unexpected "
        f"{record['hostile_unexpected_outcomes']}\nproxy RSS {before} MiB after warm-up, "
        f"{after} at end ({record['rss_growth_after_warmup']:+.1%}), peak "
        f"{record['rss_peak_mib']}; open descriptors {record['after_warmup']['open_fds']} -> "
        f"{record['end']['open_fds']}; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
