"""The feedback loop inside the running proxy: replies that describe themselves, feedback on
them, counters in /metrics, a store that goes down, and two serve processes sharing one
PostgreSQL. Upstreams are the loopback stand-in; the router is the pool-file-only online one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pg_server import postgres_server
from prometheus_client.parser import text_string_to_metric_families
from standin import StandIn
from test_proxy import KEY, KEY_ENV, serving, write_pool

from trouter.llm.pool import Pool
from trouter.local.server import free_port
from trouter.serving.api import RoutingService
from trouter.serving.learning import FeedbackLoop, price_prior_router
from trouter.serving.proxy import ProxySettings, create_app
from trouter.store import Store

MODELS = ["small", "big"]
QUESTIONS = [f"What is {i} plus {i + 1}?" for i in range(40)]


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture
def standin():
    os.environ[KEY_ENV] = KEY
    stand = StandIn(models=MODELS).start()
    yield stand
    stand.stop()
    os.environ.pop(KEY_ENV, None)


def _proxy(standin: StandIn, folder: Path, url: str, explore: float = 0.0):
    pool = Pool.load(write_pool(folder / "pool.yaml", MODELS, standin.base_url))
    router = price_prior_router(pool, explore=explore)
    service = RoutingService(router, prices={e.name: e.prices for e in pool.models})
    loop = FeedbackLoop(Store.open(url), service, learn=True, fold_interval_s=0.2)
    return create_app(service, pool, ProxySettings(), feedback=loop), loop


def _metrics(base: str) -> dict[tuple, float]:
    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _chat(client: httpx.Client, base: str, text: str, stream: bool = False, **headers):
    body = {"model": "trouter-balanced", "stream": stream,
            "messages": [{"role": "user", "content": text}]}  # fmt: skip
    if stream:
        body["stream_options"] = {"include_usage": True}  # the usage chunk carries the fields
    return client.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_replies_carry_their_id_and_costs_and_take_feedback(standin, tmp_path) -> None:
    app, loop = _proxy(standin, tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    with serving(app) as base, httpx.Client() as client:
        reply = _chat(client, base, QUESTIONS[0], **{"x-trouter-request-id": "client-id-1"})
        assert reply.status_code == 200
        h, body = reply.headers, reply.json()
        assert h["x-trouter-request-id"] == "client-id-1"
        assert h["x-trouter-model"] == body["model"] == "small"
        assert h["x-trouter-exploration"] == "false"
        assert float(h["x-trouter-cost"]) > 0 and float(h["x-trouter-predicted-cost"]) > 0
        assert body["trouter"]["request_id"] == "client-id-1"
        assert body["trouter"]["cost_usd"] == pytest.approx(float(h["x-trouter-cost"]))
        fresh = _chat(client, base, QUESTIONS[1]).headers["x-trouter-request-id"]
        assert len(fresh) == 32 and fresh != "client-id-1"
        streamed = _chat(client, base, QUESTIONS[2], stream=True)
        chunks = [json.loads(line[6:]) for line in streamed.text.splitlines()
                  if line.startswith("data: {")]  # fmt: skip
        assert chunks[-1]["trouter"]["request_id"] == streamed.headers["x-trouter-request-id"]
        assert chunks[-1]["trouter"]["cost_usd"] > 0
        post = lambda **b: client.post(f"{base}/v1/feedback", json=b)  # noqa: E731
        assert post(request_id="client-id-1", thumbs="up").json()["status"] == "accepted"
        assert post(request_id="client-id-1", thumbs="up").json()["status"] == "duplicate"
        assert post(request_id=fresh, rating=1).status_code == 200
        missing = post(request_id="never-sent", score=1)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"
        deadline = time.time() + 5
        while loop.learner.applied < 2 and time.time() < deadline:
            time.sleep(0.05)
        seen = _metrics(base)
        assert seen[("trouter_feedback_events_total", (("status", "accepted"),))] == 2
        assert seen[("trouter_feedback_events_total", (("status", "duplicate"),))] == 1
        assert seen[("trouter_decision_log_written_total", ())] == 3
        assert seen[("trouter_learned_events_total", ())] == 2
        # the served model's feedback, thumbs up then a rating of 1 (scores 1 and 0)
        recent = seen[("trouter_served_score", (("model", "small"), ("window", "recent")))]
        assert recent == pytest.approx(0.5, abs=0.01)
        assert seen[("trouter_served_score_drop", (("model", "small"),))] == 0.0
    row = loop.store.decision("client-id-1")
    assert row.model == "small" and row.prompt_tokens > 0 and row.cost_usd > 0
    assert row.query_text is None and row.features["models"] == MODELS
    loop.store.close()


def test_a_stopped_database_fails_no_request(standin, tmp_path, pg) -> None:
    app, loop = _proxy(standin, tmp_path, pg.url)
    loop.store.backend.timeout_s = 1.0
    with serving(app) as base, httpx.Client() as client:
        assert all(_chat(client, base, q).status_code == 200 for q in QUESTIONS[:10])
        pg.stop()
        try:
            started = time.perf_counter()
            codes = [_chat(client, base, q).status_code for q in QUESTIONS[10:40]]
            elapsed = time.perf_counter() - started
            down = client.post(f"{base}/v1/feedback", json={"request_id": "x", "score": 1})
            deadline = time.time() + 15
            while loop.log.dropped == 0 and time.time() < deadline:
                time.sleep(0.1)
            dropped = _metrics(base)[("trouter_decision_log_dropped_total", ())]
        finally:
            pg.start()
        assert codes == [200] * 30 and elapsed < 15
        assert down.status_code == 503 and down.headers["retry-after"] == "5"
        assert dropped > 0
    loop.store.close()


def _serve(pool_file: Path, url: str, port: int, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trouter", "serve", "--pool", str(pool_file), "--router", "online",
         "--store", url, "--port", str(port), "--log-level", "warning",
         "--workers", str(workers)],
        env={**os.environ, KEY_ENV: KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _wait_up(base: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode()[-2000:])
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("serve did not start")


def test_two_serve_processes_share_learning_through_postgres(standin, tmp_path, pg) -> None:
    pool_file = write_pool(tmp_path / "pool.yaml", MODELS, standin.base_url)
    ports = [free_port(), free_port()]
    procs = [_serve(pool_file, pg.url, port) for port in ports]
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for base, proc in zip((a, b), procs, strict=True):
            _wait_up(base, proc)
        learned = lambda: _metrics(b).get(("trouter_learned_events_total", ()), 0)  # noqa: E731
        before = learned()
        with httpx.Client() as client:
            ids = [_chat(client, a, q).headers["x-trouter-request-id"] for q in QUESTIONS[:5]]
            posted = time.time()
            for rid in ids:
                ok = client.post(f"{a}/v1/feedback", json={"request_id": rid, "thumbs": "down"})
                assert ok.status_code == 200
        while learned() < before + 5 and time.time() < posted + 5:
            time.sleep(0.1)
        assert learned() == before + 5  # all five, folded by the other process within 5 s
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_kill_9_loses_no_acknowledged_feedback(standin, tmp_path) -> None:
    """Requests and feedback from 8 threads; the proxy is killed with SIGKILL mid-way. Every
    feedback answered 200 is in the store, and the restarted proxy folds exactly those."""
    import concurrent.futures
    import signal

    pool_file = write_pool(tmp_path / "pool.yaml", MODELS, standin.base_url)
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(pool_file, url, port)
    _wait_up(base, proc)
    acknowledged: list[str] = []

    def one(i: int) -> None:
        with httpx.Client(timeout=10) as client:
            try:
                reply = _chat(client, base, f"question number {i}?")
                rid = reply.headers["x-trouter-request-id"]
                body = {"request_id": rid, "score": (i % 5) / 4, "idempotency_key": f"k{i}"}
                if client.post(f"{base}/v1/feedback", json=body).status_code == 200:
                    acknowledged.append(f"k{i}")
            except (httpx.TransportError, KeyError):
                pass  # the proxy was killed under this request

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(400)]
        while len(acknowledged) < 100:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for future in futures:
            future.result()
    store = Store.open(url)
    stored = {row[0] for row in store.backend.fetchall("SELECT event_id FROM feedback")}
    assert set(acknowledged) <= stored and len(acknowledged) >= 100
    restarted = _serve(pool_file, url, port)
    try:
        _wait_up(base, restarted)
        folded = _metrics(base)[("trouter_learned_events_total", ())]
        assert folded == len(stored)  # the restart rebuilt from every stored event
    finally:
        restarted.terminate()
        restarted.wait(10)
        store.close()


def test_workers_each_fold_every_event(standin, tmp_path) -> None:
    """--workers 4 on one SQLite file: feedback taken by any worker is folded by every one
    within 5 s (/metrics sums the workers' counters: 4 x the events)."""
    pool_file = write_pool(tmp_path / "pool.yaml", MODELS, standin.base_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workers = 4
    proc = _serve(pool_file, f"sqlite:///{tmp_path / 'w.db'}", port, workers=workers)
    try:
        _wait_up(base, proc)
        with httpx.Client() as client:
            for i, question in enumerate(QUESTIONS[:10]):
                rid = _chat(client, base, question).headers["x-trouter-request-id"]
                body = {"request_id": rid, "score": (i % 3) / 2}
                assert client.post(f"{base}/v1/feedback", json=body).status_code == 200
        posted = time.time()
        learned = lambda: _metrics(base).get(("trouter_learned_events_total", ()), 0)  # noqa: E731
        while learned() < 10 * workers and time.time() < posted + 5:
            time.sleep(0.1)
        assert learned() == 10 * workers
    finally:
        proc.terminate()
        proc.wait(20)


def test_explored_replies_say_so_and_log_their_propensity(standin, tmp_path) -> None:
    from trouter.store.traffic import traffic_report

    app, loop = _proxy(standin, tmp_path, f"sqlite:///{tmp_path / 'x.db'}", explore=0.3)
    with serving(app) as base, httpx.Client() as client:
        heads = [_chat(client, base, q).headers for q in QUESTIONS]
        deadline = time.time() + 5
        while loop.log.written < len(QUESTIONS) and time.time() < deadline:
            time.sleep(0.05)
    explored = [h for h in heads if h["x-trouter-exploration"] == "true"]
    assert 0 < len(explored) < len(heads)
    for h in heads:
        row = loop.store.decision(h["x-trouter-request-id"])
        assert row.explored == (h["x-trouter-exploration"] == "true")
        assert row.model == h["x-trouter-model"] and 0 < row.propensity < 1
    report = traffic_report(loop.store, rounds=50)
    assert report["exploration_share"] == len(explored) / len(heads)
    loop.store.close()
