"""Reliability of serving: a bad request fails alone, client errors are 400s, the
upstream's Retry-After reaches the client, and nothing grows with traffic.

Each test reproduces a failure seen against the proxy before the fix, through the same real
stack as ``test_proxy`` (uvicorn on loopback, the stand-in upstream, both upstream paths).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from test_proxy import questions, stack, up  # noqa: F401  (shared fixtures)
from test_serving_api import routerbench_router_dir  # noqa: F401
from typer.testing import CliRunner

import trouter
from trouter.cli import app as cli_app
from trouter.encoders import QueryCache, get_encoder
from trouter.serving.api import RoutingRequestError
from trouter.serving.batching import RouteBatcher

SURROGATE = "x \ud800 y"
JSON = {"content-type": "application/json"}


def chat_body(text: str, model: str = "trouter-balanced", **extra) -> bytes:
    """json.dumps writes a lone surrogate as the escape ``\\ud800``, as a client would."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return json.dumps(body).encode()


async def _post_all(base: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await asyncio.gather(
            *(client.post("/v1/chat/completions", content=b, headers=JSON) for b in bodies)
        )


@pytest.mark.parametrize("trial", range(3))
def test_a_lone_surrogate_request_fails_alone(stack, up, trial):  # noqa: F811
    good = [f"Question {i} of trial {trial}: what is {i} + {trial}?" for i in range(40)]
    bodies = [chat_body(q) for q in good]
    bodies.insert(17, chat_body(SURROGATE))
    replies = asyncio.run(_post_all(stack["base"], bodies))
    bad = replies.pop(17)
    assert bad.status_code == 400
    assert "surrogate" in bad.json()["error"]["message"]
    assert [r.status_code for r in replies] == [200] * 40
    # the bad one never reached an upstream (a loaded machine may add timeout fallbacks)
    sent = {r["body"]["messages"][0]["content"] for r in up.requests}
    assert sent == set(good)


class _PoisonedService:
    """A real routing service whose predict fails for any batch holding one poisoned query
    (as the encoder did on a lone surrogate), recording the batch sizes it was given."""

    def __init__(self, service, poison: str) -> None:
        self.service, self.poison, self.batches = service, poison, []

    def predict(self, queries):
        self.batches.append(len(queries))
        if self.poison in queries:
            raise TypeError("the encoder broke on one text")
        return self.service.predict(queries)

    def results(self, *args):
        return self.service.results(*args)


def test_a_failing_batch_is_routed_again_one_by_one(routerbench_router_dir):  # noqa: F811
    service = trouter.load(routerbench_router_dir)
    poisoned = _PoisonedService(service, "poison")
    queries = [f"route query number {i} about arithmetic" for i in range(12)]
    queries.insert(5, "poison")
    from trouter.serving.api import resolve_policy

    policy = resolve_policy("balanced")

    async def main():
        batcher = RouteBatcher(poisoned)
        try:
            return await asyncio.gather(
                *(batcher.route(q, policy) for q in queries), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert max(poisoned.batches) > 1, "the queries were never batched together"
    assert isinstance(results.pop(5), TypeError)
    expected = service.route([q for q in queries if q != "poison"], scenario="balanced")
    assert [r.model for r in results] == [e.model for e in expected]


def test_route_api_refuses_a_lone_surrogate_with_a_clear_value_error(routerbench_router_dir):  # noqa: F811
    service = trouter.load(routerbench_router_dir)
    with pytest.raises(ValueError, match="lone surrogate U\\+D800") as err:
        service.route("\ud800")
    assert isinstance(err.value, RoutingRequestError)


def test_route_cli_exits_2_on_a_lone_surrogate(routerbench_router_dir):  # noqa: F811
    result = CliRunner().invoke(
        cli_app,
        ["route", "--model-dir", str(routerbench_router_dir), "--json"],
        input='{"query": "x \\ud800 y"}\n',
    )
    assert result.exit_code == 2
    assert "stdin line 1" in result.output and "lone surrogate" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (chat_body("hi").replace(b"}]", b'}], "temperature": NaN', 1), "NaN"),
        (chat_body("hi").replace(b"}]", b'}], "temperature": 1e999', 1), "temperature"),
        (chat_body("hi", temperature=7.0), "temperature"),
        (
            json.dumps(
                {
                    "model": "trouter-balanced",
                    "messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}],
                }
            ).encode(),
            "'text' is not a string",
        ),
        (b"[" * 40_000 + b"]" * 40_000, "nested"),  # under the test proxy's 100 kB limit
        (
            chat_body("hi").replace(b'"hi"}', b'"hi", "name": ' + b"[" * 500 + b"]" * 500 + b"}"),
            "nested",
        ),
    ],
    ids=["nan", "infinite", "out-of-range", "text-part-object", "deep-json", "deep-field"],
)
def test_client_errors_are_400_and_never_reach_the_upstream(stack, up, body, needle):  # noqa: F811
    reply = httpx.post(f"{stack['base']}/v1/chat/completions", content=body, headers=JSON)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert up.total_calls == 0


@pytest.mark.parametrize("stream", [False, True])
def test_rate_limit_passes_the_upstream_retry_after_on(stack, up, stream):  # noqa: F811
    up.fail_next(1, 429, retry_after=7)
    reply = httpx.post(
        f"{stack['base']}/v1/chat/completions",
        content=chat_body(
            "a rate limited question", model=stack["service"].models[0], stream=stream
        ),
        headers=JSON,
    )
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "7"
    assert reply.json()["error"]["type"] == "rate_limit_error"


def test_query_cache_is_bounded_in_entries_and_bytes():
    cache = QueryCache(max_entries=3, max_bytes=10_000)
    vectors = {k: np.full(256, i, dtype=np.float32) for i, k in enumerate("abcde")}  # 1 KiB each
    for key in "abc":
        cache.put(key, vectors[key])
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", vectors["d"])
    assert cache.get("b") is None and len(cache) == 3  # b was the least recently used
    small = QueryCache(max_entries=100, max_bytes=2 * 1024)
    for key in "abcde":
        small.put(key, vectors[key])
    assert len(small) == 2 and small.bytes <= 2 * 1024
    assert (cache.hits, cache.misses) == (1, 1)


def test_serving_keeps_query_embeddings_bounded_and_counts_hits(routerbench_router_dir):  # noqa: F811
    service = trouter.load(routerbench_router_dir)
    cache = get_encoder(service.encoder).queries
    default, cache.max_entries = cache.max_entries, 64  # the same bound, reached sooner
    try:
        hits = cache.hits
        texts = [f"bounded memory probe {i}: how many apples are left?" for i in range(150)]
        for start in range(0, len(texts), 50):
            service.route(texts[start : start + 50])
        assert len(cache) == 64 and cache.bytes <= cache.max_bytes
        service.route(texts[-1])  # a retry of a recent prompt is not encoded again
        assert cache.hits == hits + 1
    finally:
        cache.max_entries = default


def _series(base: str) -> set[tuple]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metric_label_sets_do_not_grow_with_request_text(stack, up):  # noqa: F811
    def burst(i: int) -> list[bytes]:
        return [
            chat_body(f"unknown model probe {i}", model=f"made-up-model-{i}"),
            chat_body("the same question for the router each time"),
            f'{{"model": "invented-{i}", "messages": 3}}'.encode(),
            b"not json %d" % i,
        ]

    asyncio.run(_post_all(stack["base"], burst(0)))
    seen = _series(stack["base"])
    asyncio.run(_post_all(stack["base"], [b for i in range(1, 30) for b in burst(i)]))
    assert _series(stack["base"]) == seen
    pool = set(stack["service"].models)
    for _, labels in seen:
        labels = dict(labels)
        assert labels.get("model", next(iter(pool))) in pool
        assert labels.get("policy", "invalid") in pool | {"invalid", "unknown"} or labels[
            "policy"
        ].startswith("trouter-")
    assert "hit_rate" in httpx.get(f"{stack['base']}/metrics").text


def test_litellm_keeps_a_bounded_set_of_clients(stack, up):  # noqa: F811
    import litellm

    if stack["upstream"] != "litellm":
        pytest.skip("the direct path holds one client session for its whole life")
    asyncio.run(_post_all(stack["base"], [chat_body(f"warm {i}") for i in range(5)]))
    size = len(litellm.in_memory_llm_clients_cache.cache_dict)
    asyncio.run(_post_all(stack["base"], [chat_body(f"more traffic {i}") for i in range(60)]))
    assert len(litellm.in_memory_llm_clients_cache.cache_dict) <= max(size, 1)


@pytest.mark.parametrize(
    "body",
    [
        chat_body("x" * 5_000_000),
        json.dumps(
            {"model": "trouter-balanced", "messages": [{"role": "user", "content": "x"}] * 30_000}
        ).encode(),
    ],
    ids=["5MB-body", "30k-messages"],
)
def test_oversized_requests_get_413_and_never_reach_the_upstream(stack, up, body):  # noqa: F811
    reply = httpx.post(f"{stack['base']}/v1/chat/completions", content=body, headers=JSON)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
    assert up.total_calls == 0


def test_openai_request_fields_are_forwarded_unchanged(stack, up):  # noqa: F811
    fields = {
        "tools": [
            {
                "type": "function",
                "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        "response_format": {"type": "json_object"},
        "n": 2,
        "logprobs": True,
        "seed": 7,
    }
    model = stack["service"].models[0]
    reply = httpx.post(
        f"{stack['base']}/v1/chat/completions",
        content=chat_body("hi", model, **fields),
        headers={**JSON, "authorization": "Bearer client-key"},
    )
    assert reply.status_code == 200
    sent = up.requests[-1]["body"]
    assert {k: sent.get(k) for k in fields} == fields
    assert up.requests[-1]["headers"]["authorization"] != "Bearer client-key"


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings", "/v1/responses"])
def test_other_openai_endpoints_get_a_clean_404(stack, up, path):  # noqa: F811
    reply = httpx.post(f"{stack['base']}{path}", content=chat_body("hi"), headers=JSON)
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert up.total_calls == 0


def test_serve_listens_on_loopback_unless_told_otherwise():
    import typer.main

    command = typer.main.get_command(cli_app).commands["serve"]
    host = next(p for p in command.params if p.name == "host")
    assert host.default == "127.0.0.1"
