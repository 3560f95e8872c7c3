"""One slow, dead or flaky upstream never holds up another, through the real proxy stack.

uvicorn on loopback, the stand-in upstream (``standin``), every upstream path (direct
aiohttp, direct httpx, LiteLLM). Covered: a hung model with hundreds of abandoned requests
beside a healthy one; the per-model in-flight bound (503 for that model only, or a fallback);
the cooldown of a failing model and its ``/metrics`` state; keep-alive connections the
upstream closes right after replying.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from standin import _Handler
from test_proxy import running_proxy
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

import trouter
from trouter.llm.pool import Pool
from trouter.serving.isolation import UpstreamGuard, UpstreamLimits, host_limits
from trouter.serving.proxy import ProxySettings
from trouter.serving.upstream import UpstreamError

JSON = {"content-type": "application/json"}
PATHS = ["auto", "httpx", "litellm"]


@contextmanager
def proxy_and_standin(router_dir: Path, folder: Path, **settings) -> Iterator[tuple]:
    """The proxy in front of a stand-in serving every routed model: (URL, stand-in, models)."""
    with running_proxy(router_dir, folder, ProxySettings(**settings)) as running:
        yield running["base"], running["standin"], running["service"].models


def body(model: str, text: str = "What is 2 + 2?", **extra) -> bytes:
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    ).encode()


async def _abandoned(base: str, model: str, count: int, give_up_s: float) -> list[int | None]:
    """``count`` concurrent requests to ``model``, each given up after ``give_up_s``: the
    status of each, None where the client gave up."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=give_up_s, limits=limits) as client:

        async def one(i: int) -> int | None:
            try:
                reply = await client.post(
                    "/v1/chat/completions", content=body(model, f"q{i}"), headers=JSON
                )
            except httpx.TimeoutException:
                return None
            return reply.status_code

        return await asyncio.gather(*(one(i) for i in range(count)))


async def _settled(count, quiet_s: float = 0.5, limit_s: float = 20.0) -> int:
    """Wait until ``count()`` stops growing for ``quiet_s``; its last value."""
    deadline = time.monotonic() + limit_s
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if count() != last:
            last, since = count(), time.monotonic()
        elif last and time.monotonic() - since >= quiet_s:
            break
    return last


@pytest.mark.parametrize("path", PATHS)
def test_a_hung_model_does_not_delay_a_healthy_one(routerbench_router_dir, tmp_path, path):  # noqa: F811
    """520 waiting requests to a hung model (more than the 512 connections of the proxy's
    one shared pool): a request to another model sent meanwhile still answers at once."""
    with proxy_and_standin(
        routerbench_router_dir, tmp_path, upstream=path, upstream_timeout_s=30
    ) as (
        base,
        upstream,
        models,
    ):
        hung, healthy = models[0], models[1]
        upstream.hang_next(10_000, 8.0, model=hung)

        async def scenario():
            load = asyncio.ensure_future(_abandoned(base, hung, 520, give_up_s=5.0))
            reached = await _settled(lambda: upstream.calls[hung])
            started = time.perf_counter()
            async with httpx.AsyncClient(base_url=base, timeout=3.0) as client:
                reply = await client.post(
                    "/v1/chat/completions", content=body(healthy), headers=JSON
                )
            took = time.perf_counter() - started
            return reached, reply, took, await load

        reached, reply, took, statuses = asyncio.run(scenario())
        upstream._stopping.set()  # release the hung replies so the proxy shuts down at once
    assert reply.status_code == 200 and reply.headers["x-trouter-model"] == healthy
    assert took < 3.0
    assert reached <= UpstreamLimits.max_in_flight
    # the rest were refused for that model alone (None: the client gave up first, as a
    # starved machine may make it do before the proxy reads the request)
    assert 503 in statuses and set(statuses) <= {None, 503}, set(statuses)


def test_a_model_at_its_in_flight_bound_gets_503_alone_and_routed_requests_fall_back(
    routerbench_router_dir,  # noqa: F811
    tmp_path,
):
    service = trouter.load(routerbench_router_dir)
    question = "Which planet is the largest in the solar system?"
    ranking = service.route(question, scenario="balanced").ranking
    full, other = ranking[0], ranking[1]
    with proxy_and_standin(
        routerbench_router_dir, tmp_path, max_in_flight_per_model=2, upstream_timeout_s=30
    ) as (base, upstream, _):
        upstream.hang_next(2, 30.0, model=full)

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                holders = [
                    asyncio.ensure_future(
                        client.post("/v1/chat/completions", content=body(full), headers=JSON)
                    )
                    for _ in range(2)
                ]
                while upstream.calls[full] < 2:
                    await asyncio.sleep(0.01)
                refused = await client.post(
                    "/v1/chat/completions", content=body(full), headers=JSON
                )
                routed = await client.post(
                    "/v1/chat/completions", content=body("trouter-balanced", question), headers=JSON
                )
                unrelated = await client.post(
                    "/v1/chat/completions", content=body(other), headers=JSON
                )
                upstream._stopping.set()
                await asyncio.gather(*holders)
                return refused, routed, unrelated

        refused, routed, unrelated = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "upstream_overloaded"
    assert routed.status_code == 200 and routed.headers["x-trouter-model"] == other
    assert routed.headers["x-trouter-fallbacks"] == "1"
    assert unrelated.status_code == 200
    assert upstream.calls[full] == 2  # the refused calls never reached it


def _sample(metrics_text: str, name: str, model: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


@pytest.mark.parametrize("path", PATHS)
def test_a_failing_model_cools_down_and_says_so_in_metrics(
    routerbench_router_dir,  # noqa: F811
    tmp_path,
    path,
):  # noqa: F811
    with proxy_and_standin(
        routerbench_router_dir, tmp_path, upstream=path, cooldown_failures=2, cooldown_s=60
    ) as (base, upstream, models):
        dead = models[0]
        upstream.fail_next(100, 500, model=dead)
        url = f"{base}/v1/chat/completions"
        first = [httpx.post(url, content=body(dead), headers=JSON).status_code for _ in range(2)]
        assert first == [502, 502] and upstream.calls[dead] == 2
        skipped = httpx.post(url, content=body(dead), headers=JSON)
        assert skipped.status_code == 503 and upstream.calls[dead] == 2
        assert skipped.json()["error"]["code"] == "upstream_cooldown"
        assert 55 <= int(skipped.headers["retry-after"]) <= 60
        assert httpx.post(url, content=body(models[1]), headers=JSON).status_code == 200
        text = httpx.get(f"{base}/metrics").text
        assert _sample(text, "trouter_upstream_cooldowns_total", dead) == 1
        until = _sample(text, "trouter_upstream_cooldown_until_seconds", dead)
        assert time.time() + 50 < until <= time.time() + 60
        assert _sample(text, "trouter_upstream_cooldown_until_seconds", models[1]) == 0
        assert _sample(text, "trouter_upstream_in_flight", dead) == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(guard: UpstreamGuard, model: str, error: UpstreamError | None = None):
    async def call():
        if error is not None:
            raise error
        return "ok"

    return asyncio.run(guard.complete(model, call))


def test_cooldown_lets_one_trial_call_through_and_counts_only_upstream_faults():
    clock = _Clock()
    limits = UpstreamLimits(cooldown_failures=3, cooldown_window_s=10, cooldown_s=30)
    registry = CollectorRegistry()
    guard = UpstreamGuard(limits, ["m"], registry=registry, clock=clock)
    server_error = UpstreamError("m", "server", 502, "HTTP 500", True)
    for kind in ("rate_limit", "bad_request"):  # the caller's errors never count
        for _ in range(5):
            with pytest.raises(UpstreamError):
                _run(guard, "m", UpstreamError("m", kind, 429, "slow down", False))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            _run(guard, "m", server_error)
    clock.now += 11  # those two fell out of the window
    for _ in range(2):
        with pytest.raises(UpstreamError):
            _run(guard, "m", server_error)
    assert _run(guard, "m") == "ok"  # a success starts the count again
    for _ in range(3):
        with pytest.raises(UpstreamError):
            _run(guard, "m", server_error)
    with pytest.raises(UpstreamError) as skipped:
        _run(guard, "m")
    assert skipped.value.kind == "cooldown" and skipped.value.retry_after == "30"
    assert guard.ranked(["m", "x"]) == ["x", "m"]
    assert b'trouter_upstream_cooldowns_total{model="m"} 1.0' in generate_latest(registry)
    clock.now += 30
    with pytest.raises(UpstreamError):  # the trial call fails: another full cooldown
        _run(guard, "m", server_error)
    with pytest.raises(UpstreamError, match="cooldown"):
        _run(guard, "m")
    clock.now += 30
    assert _run(guard, "m") == "ok"  # the trial succeeds: back in service
    assert _run(guard, "m") == "ok"
    assert guard.in_flight["m"] == 0
    assert b'trouter_upstream_cooldown_until_seconds{model="m"} 0.0' in generate_latest(registry)


def test_each_upstream_host_gets_a_pool_sized_for_its_models():
    models = ["a", "b", "c"]
    pool = Pool.openai_compatible(models, "http://10.0.0.5:8000/v1")
    extra = pool.models[0].model_copy(update={"name": "d", "api_base": "https://vllm.internal/v1"})
    limits = host_limits([*pool.models, extra], 64)
    assert limits == {"http://10.0.0.5:8000": 192, "https://vllm.internal:443": 64}


class _ClosesWhenIdle(_Handler):
    """Replies as the stand-in does (keep-alive), then closes the connection at once, as an
    upstream whose idle timeout is shorter than the proxy's keeps doing."""

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        super().do_POST()
        self.close_connection = True


class _ClosesOnReuse(_Handler):
    """Keeps the connection after a reply, but resets it when the next request arrives on
    it: the end state of that race, where the idle close crosses the proxy's next request."""

    served = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        if self.served:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        self.served += 1
        super().do_POST()


@pytest.mark.parametrize("closes", [_ClosesWhenIdle, _ClosesOnReuse], ids=["idle", "on-reuse"])
@pytest.mark.parametrize("path", ["auto", "httpx"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_keep_alive_connection_the_upstream_closed_is_retried_on_a_fresh_one(
    routerbench_router_dir,  # noqa: F811
    tmp_path,
    path,
    stream,
    closes,
):
    with proxy_and_standin(
        routerbench_router_dir, tmp_path, upstream=path, cooldown_failures=0
    ) as (
        base,
        upstream,
        models,
    ):
        upstream._server.RequestHandlerClass = type("Handler", (closes,), {"standin": upstream})

        async def main():
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                replies = []
                for i in range(60):  # one model by name: no fallback to hide a failure
                    replies.append(
                        await client.post(
                            "/v1/chat/completions",
                            content=body(models[2], f"question {i}", stream=stream),
                            headers=JSON,
                        )
                    )
                return replies

        replies = asyncio.run(main())
    failed = [r.text[:200] for r in replies if r.status_code != 200]
    assert failed == []
    assert all("error" not in r.text for r in replies)
    assert upstream.calls[models[2]] == 60  # each answered once: no request was sent twice


def test_serve_refuses_a_bad_in_flight_bound_with_one_paragraph(routerbench_router_dir, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from trouter.cli import app

    models = trouter.load(routerbench_router_dir).models
    pool = Pool.openai_compatible(models, "http://127.0.0.1:9/v1").save(tmp_path / "pool.yaml")
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--model-dir",
            str(routerbench_router_dir),
            "--pool",
            str(pool),
            "--max-in-flight-per-model",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert "max_in_flight must be at least 1" in result.output
    assert "Traceback" not in result.output
