"""A small soak through the proxy with hostile clients mixed in (``scripts/soak_hostile.py``).

200 jobs, 10 of them hostile (one of each kind: slow head, slow body, 1 MB header, 2 MB
body, ``text/plain``, foreign ``Origin``, foreign ``Host``, and three clients that leave
mid-request), against the proxy app under uvicorn with the stand-in upstream. Every
well-behaved ``openai``-client request must be answered, and every hostile client refused
the way the proxy's limits say; ``/metrics`` counts a completed stream as answered, not as
client-aborted. Correctness only: the timings live in the script's record.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from standin import StandIn
from test_proxy import serving
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

import trouter
from trouter.llm.pool import Pool
from trouter.serving.limits import Limits
from trouter.serving.proxy import ProxySettings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import soak_hostile  # noqa: E402
from serving_stack import chat_bodies  # noqa: E402


def test_hostile_clients_do_not_fail_well_behaved_ones(routerbench_router_dir):  # noqa: F811
    service = trouter.load(routerbench_router_dir)
    limits = Limits(header_timeout_s=1.0, body_timeout_s=1.0)
    settings = ProxySettings(upstream_timeout_s=10.0, limits=limits)
    with StandIn(models=service.models) as upstream:
        pool = Pool.openai_compatible(service.models, upstream.base_url, None, 1.0, 2.0)
        app = create_app(trouter.load(routerbench_router_dir, pool), pool, settings)
        with serving(app, limits) as base:
            texts = [f"What is {i} plus {i + 1}? Answer briefly." for i in range(200)]
            jobs = soak_hostile.plan(chat_bodies(texts, "trouter-balanced", 0.3), 0.05)
            target = soak_hostile.Target(int(base.rsplit(":", 1)[1]), 1.0, 1.0)
            run = soak_hostile.soak(
                base, jobs, target, warmup=0, block=200, concurrency=8, max_seconds=60.0
            )
            record = asyncio.run(run)
            counts = soak_hostile.proxy_counts(base)
            health = httpx.get(f"{base}/health", timeout=5)

    assert record["measured"]["errors"] == 0, record["measured"]["error_kinds"]
    assert record["measured"]["requests"] == 190
    assert record["hostile_clients"] == 10
    assert set(record["hostile"]) == set(soak_hostile.HOSTILE)
    assert record["hostile_unexpected_outcomes"] == 0, record["hostile"]
    assert health.status_code == 200
    # /metrics: every answered request (streams included) is a 200, and only the three
    # clients that left can be counted as aborted (499)
    assert 190 <= counts["requests_by_status"]["200"] <= 192
    assert counts["client_aborted"] <= 3
    assert counts["requests_by_status"].get("499", 0) == counts["client_aborted"]
