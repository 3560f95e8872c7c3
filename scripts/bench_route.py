"""Routing-speed benchmark (not a test): ``trouter.load(dir).route(query)`` for every router.

Each router that routes query text (the oracles read test labels) is fitted with its default
settings on ``--train-rows`` RouterBench training rows (seeded sample), saved, loaded as a
service would load it, and asked to route ``--queries`` GSM8K test questions one at a time,
each new to the encoder and its query cache (what a server sees), on one thread as ``trouter
serve`` runs. Reported per router: the encoder, p50 and p99 wall time of one ``route()``
call, the p50 of its CPU time (the thread's own: on a shared, loaded machine wall time also
counts the time other processes held the core), and the p50 of a repeated query (its
embedding comes from the query cache). ``--profile ROUTER`` adds the costliest functions of
that router's calls (cProfile, own time).

Usage: ``python scripts/bench_route.py [--routers auto,knn] [--json results/route.json]``;
``--table PATH`` prints the Markdown table of such a file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import cprofile_shares, ms  # noqa: E402
from serving_stack import gsm8k_questions, machine, write_record  # noqa: E402


def routers() -> list[str]:
    from trouter.routers.base import ROUTERS, make_router

    make_router("knn")  # registers every router
    return sorted(name for name, cls in ROUTERS.items() if not cls.needs_labels)


def fit_and_load(name: str, train_rows: int, workdir: Path):
    import trouter
    from trouter.data.suites import load_suite
    from trouter.routers import make_router

    data = load_suite("routerbench")
    train, validation = data.split("train"), data.split("validation")
    rows = np.sort(np.random.default_rng(0).choice(len(train), train_rows, replace=False))
    started = time.perf_counter()
    router = make_router(name, seed=0).fit(train.subset(rows), validation)
    fit_s = time.perf_counter() - started
    return trouter.load(router.save(workdir / name)), fit_s


def bench_one(service, texts: list[str], profile: bool) -> dict:
    # the encoders' query caches are shared by every router of the process: a tag per router
    # keeps each router's queries new to them
    tag = service.router_name
    for i, text in enumerate(texts[:10]):
        service.route(f"warm-up {i} {text}")
    wall, cpu = [], []
    for i, text in enumerate(texts):
        t0, c0 = time.perf_counter(), time.thread_time()
        service.route(f"{text} [{tag} {i}]")  # new to the encoder and to its query cache
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    repeat = []
    for i, text in enumerate(texts[:100]):
        t0 = time.perf_counter()
        service.route(f"{text} [{tag} {i}]")
        repeat.append(time.perf_counter() - t0)
    out = {
        "encoder": service.encoder,
        "queries": len(texts),
        "p50_ms": ms(wall, 50),
        "p99_ms": ms(wall, 99),
        "cpu_p50_ms": ms(cpu, 50),
        "repeated_p50_ms": ms(repeat, 50),
    }
    if profile:
        out["profile"] = cprofile_shares(
            lambda: [service.route(f"{t} ({tag} profiled)") for t in texts[:100]]
        )
    return out


def table(record: dict) -> str:
    lines = [
        "| router | encoder | route() p50 (ms) | p99 (ms) | CPU p50 (ms) | repeated query p50 "
        "(ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in record["routers"].items():
        lines.append(
            f"| `{name}` | {row['encoder']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | "
            f"{row['cpu_p50_ms']:.3f} | {row['repeated_p50_ms']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routers", default="all", help="comma list, or all")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--profile", default="", help="comma list of routers to profile")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--table", type=Path, default=None, help="print the table of a record")
    args = parser.parse_args()
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return
    names = routers() if args.routers == "all" else args.routers.split(",")
    profiled = set(filter(None, args.profile.split(",")))
    texts = gsm8k_questions("test", args.queries)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as `trouter serve` runs: one thread for numpy's BLAS and torch
    import torch

    torch.set_num_threads(1)
    record = {"machine": machine(), "train_rows": args.train_rows, "routers": {}}
    with tempfile.TemporaryDirectory(prefix="bench-route-") as tmp:
        for name in names:
            service, fit_s = fit_and_load(name, args.train_rows, Path(tmp))
            row = bench_one(service, texts, name in profiled)
            row["fit_s"] = round(fit_s, 1)
            record["routers"][name] = row
            print(json.dumps({name: row}), flush=True)
    print(table(record))
    write_record(record, args.json)


if __name__ == "__main__":
    main()
