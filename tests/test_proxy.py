"""The routing proxy over real HTTP: uvicorn on loopback, the stand-in upstream, the openai client.

The router is the kNN fitted on a real RouterBench slice (``test_serving_api``); the pool maps
its eleven model names to the stand-in, so every request crosses the full stack: openai
client -> proxy -> routing -> aiohttp, httpx or LiteLLM (each runs every test) -> stand-in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from standin import StandIn, count_tokens, echo_responder, prompt_tokens
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)
from typer.testing import CliRunner

import trouter
from trouter.cli import app as cli_app
from trouter.data.suites import load_suite
from trouter.llm.pool import Pool
from trouter.local.server import free_port
from trouter.serving.limits import Limits, uvicorn_options
from trouter.serving.proxy import ProxySettings, create_app

KEY_ENV = "TROUTER_TEST_PROXY_KEY"
KEY = "sk-test-0123456789abcdef"


def write_pool(path: Path, models: list[str], base_url: str) -> Path:
    return Pool.openai_compatible(models, base_url, KEY_ENV, 10.0, 30.0).save(path)


@contextmanager
def serving(app, limits: Limits | None = None, log_level: str = "critical") -> Iterator[str]:
    """``app`` under uvicorn in a background thread on loopback, with the proxy's protocol
    limits (``trouter serve``'s); yields its base URL."""
    port = free_port()
    options = uvicorn_options(limits or Limits())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running_proxy(router_dir: Path, folder: Path, settings: ProxySettings) -> Iterator[dict]:
    """Stand-in upstream + the proxy app under uvicorn in a background thread, on loopback."""
    os.environ[KEY_ENV] = KEY
    service = trouter.load(router_dir)
    standin = StandIn(models=service.models).start()
    pool_file = write_pool(folder / "pool.yaml", service.models, standin.base_url)
    pool = Pool.load(pool_file)
    app = create_app(trouter.load(router_dir, pool), pool, settings)
    try:
        with serving(app, settings.limits) as base:
            yield {
                "service": service,
                "standin": standin,
                "base": base,
                "pool_file": pool_file,
                "upstream": settings.upstream,
            }
    finally:
        standin.stop()
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module", params=["auto", "httpx", "litellm"])
def stack(request, routerbench_router_dir, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    """The running proxy + an openai client, with each way of calling the upstream: the
    direct aiohttp path (``auto``) and httpx path to OpenAI-compatible upstreams, and every
    call via LiteLLM."""
    settings = ProxySettings(
        max_body_bytes=100_000, max_attempts=3, upstream_timeout_s=1.5, upstream=request.param
    )
    # the tests inject failures into one shared proxy: no cooldown carries between them
    # (cooldowns are tested in test_upstream_isolation)
    settings.cooldown_failures = 0
    folder = tmp_path_factory.mktemp("pool")
    with running_proxy(routerbench_router_dir, folder, settings) as running:
        running["client"] = openai.OpenAI(
            base_url=f"{running['base']}/v1", api_key="anything", max_retries=0, timeout=30
        )
        yield running


@pytest.fixture
def up(stack) -> StandIn:
    stack["standin"].reset()
    stack["standin"].responder = echo_responder
    return stack["standin"]


@pytest.fixture(scope="module")
def questions() -> list[str]:
    """Short real test questions (Winogrande), fast to encode."""
    test = load_suite("routerbench").split("test")
    return [t for t, task in zip(test.texts, test.tasks, strict=True) if task == "winogrande"][:12]


def ask(stack, model: str, question: str, **kwargs):
    raw = stack["client"].chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": question},
        ],
        **kwargs,
    )
    return raw, raw.parse()


def test_models_lists_policies_and_pool(stack):
    ids = [m.id for m in stack["client"].models.list()]
    assert ids[:4] == [
        "trouter",
        "trouter-balanced",
        "trouter-cost-first",
        "trouter-performance-first",
    ]
    assert set(ids[4:]) == set(stack["service"].models)


def test_each_policy_forwards_to_the_model_the_router_predicts(stack, up, questions):
    service = stack["service"]
    picked = set()
    for question in questions[:6]:
        for policy in ("cost-first", "performance-first"):
            expected = service.route(question, scenario=policy).model
            raw, reply = ask(stack, f"trouter-{policy}", question)
            assert raw.headers["x-trouter-model"] == expected == reply.model
            assert reply.choices[0].message.content == echo_responder(
                [{"role": "user", "content": question}], expected
            )
            picked.add((question, policy, expected))
    by_question = {}
    for question, _, model in picked:
        by_question.setdefault(question, set()).add(model)
    assert any(len(models) > 1 for models in by_question.values()), "policies never differed"
    # The upstream saw the key from the environment and the unprefixed model name.
    assert up.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert sum(up.calls.values()) == 12


def test_routing_query_is_the_last_user_message(stack, up, questions):
    service = stack["service"]
    picks = {q: service.route(q, scenario="cost-first").model for q in questions}
    earlier, last = next((a, b) for a in questions for b in questions if picks[a] != picks[b])
    messages = [
        {"role": "system", "content": earlier},  # neither the system prompt...
        {"role": "user", "content": earlier},  # ...nor an earlier turn decides
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": [{"type": "text", "text": last}]},
    ]
    raw = stack["client"].chat.completions.with_raw_response.create(
        model="trouter-cost-first", messages=messages
    )
    assert raw.headers["x-trouter-model"] == picks[last]
    assert up.requests[0]["body"]["messages"] == messages  # forwarded unchanged


def test_streaming_relays_chunks_from_the_chosen_model(stack, up, questions):
    expected = stack["service"].route(questions[0], scenario="balanced").model
    raw, stream = ask(stack, "trouter-balanced", questions[0], stream=True)
    assert raw.headers["x-trouter-model"] == expected
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo_responder([{"role": "user", "content": questions[0]}], expected)
    assert {c.model for c in chunks} == {expected}
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("fault", ["500", "timeout", "malformed", "drop"])
@pytest.mark.parametrize("stream", [False, True])
def test_failed_upstream_falls_back_to_the_next_best_model(stack, up, questions, fault, stream):
    ranking = stack["service"].route(questions[1], scenario="balanced").ranking
    first = ranking[0]
    {
        "500": lambda: up.fail_next(1, 500, model=first),
        "timeout": lambda: up.hang_next(1, 5.0, model=first),
        "malformed": lambda: up.malformed_next(1, model=first),
        # a drop on a reused keep-alive connection is retried once on a fresh one first
        "drop": lambda: up.drop_next(2, model=first),
    }[fault]()
    started = time.perf_counter()
    raw, reply = ask(stack, "trouter-balanced", questions[1], stream=stream)
    if stream:
        reply = list(reply)
    assert raw.headers["x-trouter-model"] == ranking[1]
    assert raw.headers["x-trouter-fallbacks"] == "1"
    assert 1 <= up.calls[first] <= (2 if fault == "drop" else 1)
    assert up.calls[ranking[1]] == 1
    assert time.perf_counter() - started < 4.5  # the 1.5 s upstream timeout, not the 5 s hang


def test_all_attempts_failing_gives_502_after_max_attempts(stack, up, questions):
    up.fail_next(10, 503)
    with pytest.raises(openai.APIStatusError) as err:
        ask(stack, "trouter-cost-first", questions[2])
    assert err.value.status_code == 502
    assert err.value.body["type"] == "upstream_error" and "503" in err.value.body["message"]
    assert up.total_calls == 3  # max_attempts


def test_timeout_everywhere_gives_504(stack, up, questions):
    up.hang_next(10, 4.0)
    with pytest.raises(openai.APIStatusError) as err:
        ask(stack, "gpt-4-1106-preview", questions[2])  # by name: one attempt, no fallback
    assert err.value.status_code == 504
    assert err.value.body["code"] == "upstream_timeout"


def test_rate_limit_is_passed_through_without_fallback(stack, up, questions):
    first = stack["service"].route(questions[3], scenario="balanced").model
    up.fail_next(1, 429, model=first)
    with pytest.raises(openai.RateLimitError) as err:
        ask(stack, "trouter-balanced", questions[3])
    assert err.value.body["type"] == "rate_limit_error"
    assert up.total_calls == 1


def test_pool_model_name_bypasses_routing(stack, up, questions):
    raw, reply = ask(stack, "claude-instant-v1", questions[4])
    assert reply.model == raw.headers["x-trouter-model"] == "claude-instant-v1"
    up.fail_next(1, 500)
    with pytest.raises(openai.InternalServerError) as err:
        ask(stack, "claude-instant-v1", questions[4])
    assert err.value.status_code == 502 and up.total_calls == 2


def test_api_key_never_leaves_in_error_bodies(stack, up, questions):
    def leaky(messages, model):
        raise RuntimeError(f"upstream rejected key {os.environ[KEY_ENV]}")

    up.responder = leaky
    with pytest.raises(openai.APIStatusError) as err:
        ask(stack, "trouter-balanced", questions[5])
    assert KEY not in str(err.value.body) and "***" in err.value.body["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"model": "trouter-balanced"}', 400, "messages"),
        (b'{"model": "trouter-balanced", "messages": []}', 400, "messages"),
        (
            b'{"model": "trouter-balanced", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "role",
        ),
        (
            b'{"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "does not exist",
        ),
    ],
)
def test_malformed_requests_get_openai_style_errors(stack, up, body, status, needle):
    reply = httpx.post(
        f"{stack['base']}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == status
    error = reply.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert up.total_calls == 0


def test_oversized_body_is_refused_with_413(stack, up):
    with pytest.raises(openai.APIStatusError) as err:
        stack["client"].chat.completions.create(
            model="trouter-balanced", messages=[{"role": "user", "content": "x" * 150_000}]
        )
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
    assert up.total_calls == 0


def _metrics(stack) -> dict[tuple, float]:
    text = httpx.get(f"{stack['base']}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_routing_errors_and_cost(stack, up, questions):
    before = _metrics(stack)
    ranking = stack["service"].route(questions[6], scenario="cost-first").ranking
    ask(stack, "trouter-cost-first", questions[6])
    up.fail_next(1, 500, model=ranking[0])
    ask(stack, "trouter-cost-first", questions[6])
    httpx.post(
        f"{stack['base']}/v1/chat/completions",
        content=b"nope",
        headers={"content-type": "application/json"},
    )
    after = _metrics(stack)

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("trouter_requests_total", policy="trouter-cost-first", status="200") == 2
    assert delta("trouter_requests_total", policy="invalid", status="400") == 1
    assert (
        delta("trouter_routed_requests_total", policy="trouter-cost-first", model=ranking[0]) == 1
    )
    assert (
        delta("trouter_routed_requests_total", policy="trouter-cost-first", model=ranking[1]) == 1
    )
    assert delta("trouter_upstream_errors_total", model=ranking[0], kind="server") == 1
    assert delta("trouter_fallbacks_total") == 1
    assert delta("trouter_routing_overhead_seconds_count") == 2
    # cost = the stand-in's token usage x the pool's prices (10 / 30 USD per million tokens)
    sent = up.requests[0]["body"]["messages"]
    reply = echo_responder(sent, ranking[0])
    expected = (prompt_tokens(sent) * 10.0 + count_tokens(reply) * 30.0) / 1e6
    assert delta("trouter_cost_usd_total", model=ranking[0]) == pytest.approx(expected)
    shares = [v for (name, _), v in after.items() if name == "trouter_routed_share"]
    assert sum(shares) == pytest.approx(1.0)


def test_health(stack):
    body = httpx.get(f"{stack['base']}/health").json()
    assert body["status"] == "ok" and body["router"] == "knn"
    assert sorted(body["routed_models"]) == sorted(stack["service"].models)


def test_serve_refuses_a_pool_missing_router_models(stack, tmp_path, routerbench_router_dir):  # noqa: F811
    models = stack["service"].models
    pool = write_pool(tmp_path / "small.yaml", models[:2], "http://x/v1")
    result = CliRunner().invoke(
        cli_app, ["serve", "--model-dir", str(routerbench_router_dir), "--pool", str(pool)]
    )
    assert result.exit_code == 2
    assert "missing" in result.output and models[5] in result.output


def test_serve_refuses_a_pool_yaml_with_a_wrong_field(stack, tmp_path, routerbench_router_dir):  # noqa: F811
    pool = write_pool(tmp_path / "typo.yaml", stack["service"].models, "http://x/v1")
    pool.write_text(pool.read_text().replace("output_price_per_mtok", "output_price_per_mtk", 1))
    result = CliRunner().invoke(
        cli_app, ["serve", "--model-dir", str(routerbench_router_dir), "--pool", str(pool)]
    )
    assert result.exit_code == 2
    assert "output_price_per_mtk" in result.output and "unknown field" in result.output


def test_a_streamed_chunk_longer_than_the_read_buffer_is_relayed_whole(stack, up, questions):
    long_word = "x" * 300_000  # one SSE line of ~300 KB (aiohttp's default line limit: 128 KiB)
    up.responder = lambda messages, model: f"start {long_word} end"
    raw, stream = ask(stack, "trouter-balanced", questions[7], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"start {long_word} end"


def test_other_methods_and_paths_are_fastapis(stack, up):
    reply = httpx.get(f"{stack['base']}/v1/chat/completions")
    assert reply.status_code == 405 and reply.json()["error"]["type"] == "invalid_request_error"
    assert up.total_calls == 0


def test_an_internal_error_on_the_chat_path_is_an_openai_style_500():
    """The chat endpoint is answered before FastAPI's handlers: a bug in it must still give
    OpenAI's error shape, and the app must go on answering."""
    import asyncio

    from fastapi import FastAPI

    from trouter.serving.auth import KeyRing
    from trouter.serving.limits import Limits
    from trouter.serving.proxy import ProxyApp

    calls = []

    async def chat(request, client):
        calls.append(request.url.path)
        raise RuntimeError("a bug")

    api = FastAPI()
    api.state.metrics = None
    app = ProxyApp(api, chat, KeyRing([]), Limits(allowed_hosts=["proxy"]))

    async def post_twice():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            return [await client.post("/v1/chat/completions", json={}) for _ in range(2)]

    replies = asyncio.run(post_twice())
    assert [r.status_code for r in replies] == [500, 500] and len(calls) == 2
    assert replies[0].json()["error"] == {
        "message": "internal proxy error: RuntimeError",
        "type": "server_error",
        "code": "internal_error",
    }
