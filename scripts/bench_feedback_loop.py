"""CPU cost of the proxy's feedback loop per request (a benchmark, not a test).

An ``online`` router around ``best-single`` is fitted on RouterBench training rows and served
by a :class:`RoutingService`, as ``trouter serve`` serves it. For ``--requests`` real test
questions it measures, in one process:

* ``route()`` p50 of one query (the baseline the loop must not slow);
* the request path's share: ``FeedbackLoop.record`` per request (CPU of the calling thread);
* the writer thread: its own CPU per decision written (the online router's prior and cell,
  the hash, the batched insert);
* learning: process CPU per feedback event folded (read from the store + ``partial_fit``);
* the decisions' size on disk per decision.

Stores: SQLite in a temp dir, and PostgreSQL where ``--pg-url`` is given.
Request ids are the proxy's own (time-ordered), or with ``--ids random`` random ones, as
clients may send: the decision log's index is keyed by them.
Usage: ``python scripts/bench_feedback_loop.py [--requests 2000] [--ids time|random]
[--pg-url postgresql://...]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _service():
    from trouter.data.suites import load_suite
    from trouter.routers.base import make_router
    from trouter.routers.online import OnlineRouter
    from trouter.serving.api import RoutingService

    data = load_suite("routerbench")
    train, test = data.subset(data.splits == "train"), data.subset(data.splits == "test")
    base = make_router("best-single").fit(train)
    router = OnlineRouter.around(base, train)
    return RoutingService(router, prices={m: None for m in router.models_}), test


def request_ids(kind: str, n: int) -> list[str]:
    """``time``: the ids the proxy gives (UUID version 7, sorted by time); ``random``: UUID
    version 4, as a client may send its own."""
    import uuid

    from trouter.serving.learning import time_ordered_id

    return [time_ordered_id() if kind == "time" else uuid.uuid4().hex for _ in range(n)]


def stored_bytes(store) -> float:
    """The decisions table's size on disk: the SQLite file after a WAL checkpoint (the
    table is all it holds), PostgreSQL's table with its indexes and TOAST."""
    backend = store.backend
    if backend.dialect == "sqlite":
        backend.fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        return Path(backend.url.removeprefix("sqlite:///")).stat().st_size
    return backend.fetchall("SELECT pg_total_relation_size('decisions')")[0][0]


def measure(url: str, service, test, n: int, ids: str = "time") -> dict:
    from trouter.serving.learning import FeedbackLoop
    from trouter.store import Feedback, Store

    texts = [test.texts[i % len(test)] for i in range(n)]
    rids = request_ids(ids, n)
    names = test.model_names
    loop = FeedbackLoop(Store.open(url), service, learn=True, fold_interval_s=3600)
    loop.start()
    route_ms, caller_cpu = [], 0.0
    for i, text in enumerate(texts):
        t0 = time.perf_counter()
        result = service.route(text)
        route_ms.append((time.perf_counter() - t0) * 1000)
        c0 = time.thread_time()
        loop.record(rids[i], result, result.model, text, {"prompt_tokens": 50}, 1e-4, 5.0)
        caller_cpu += time.thread_time() - c0
    loop.log.wait_written(rids[-1], 120)
    writer_cpu = loop.log.cpu_s
    stored = stored_bytes(loop.store) / n
    for i in range(n):
        score = float(test.performance[i % len(test), names.index(service.router.models_[0])])
        loop.store.add_feedback(Feedback(rids[i], 0.0 if np.isnan(score) else score))
    f0 = time.process_time()
    folded = loop.learner.fold()
    fold_cpu = time.process_time() - f0
    dropped = loop.log.dropped
    loop.close()
    loop.store.close()
    return {
        "store": url.split(":", 1)[0],
        "requests": n,
        "request_ids": ids,
        "route_p50_ms": float(np.percentile(route_ms, 50)),
        "record_us_per_request": caller_cpu / n * 1e6,
        "writer_cpu_ms_per_decision": writer_cpu / n * 1000,
        "stored_bytes_per_decision": round(stored),
        "fold_cpu_ms_per_event": fold_cpu / max(folded, 1) * 1000,
        "events_folded": folded,
        "dropped": dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument(
        "--ids", choices=["time", "random"], default="time",
        help="Request ids: the proxy's own (sorted by time) or random (UUID 4).",
    )  # fmt: skip
    args = parser.parse_args()
    service, test = _service()
    service.route("warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        urls = [f"sqlite:///{tmp}/bench.db"] + ([args.pg_url] if args.pg_url else [])
        for url in urls:
            print(json.dumps(measure(url, service, test, args.requests, args.ids)))


if __name__ == "__main__":
    main()
