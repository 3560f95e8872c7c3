"""One decision path: the evaluation harness, ``trouter route``, ``trouter.load().route()`` and
the proxy choose the same model for every query, every router and every policy.

Every registered router that routes query text (the oracles read test labels) is fitted on
the RouterBench fixture's training rows, with small settings where training is slow, and
saved. 1,000 real queries of the committed fixtures (RouterBench, LLMRouter, RouterDC,
RouteLLM, GSM8K) are then routed under the three scenarios:

* harness: ``predict_test`` + :func:`decide`, as ``evaluate_fold`` scores it (the router as
  fitted, before saving);
* CLI: ``trouter route --json`` on the saved router, all queries on stdin;
* Python API: ``trouter.load(dir).route(queries, scenario=...)``;
* proxy: all 1,000 through the proxy's coalescing batcher (what ``create_app`` routes with),
  and the first :data:`HTTP_QUERIES` as real chat requests through the proxy app to a
  loopback stand-in (the ``x-trouter-model`` header names the model that answered).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from standin import StandIn
from typer.testing import CliRunner

import trouter
from trouter.cli import app as cli_app
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites import load_suite
from trouter.evaluation.harness import predict_test
from trouter.evaluation.scenarios import SCENARIOS
from trouter.llm.pool import Pool
from trouter.routers import make_router
from trouter.routers.base import ROUTERS, decide
from trouter.serving.api import resolve_policy
from trouter.serving.batching import RouteBatcher
from trouter.serving.proxy import ProxySettings, create_app

N_QUERIES = 1000
HTTP_QUERIES = 40
#: Small settings for the routers that train by gradient descent or refit per fold.
SMALL_TROUTER = {"max_epochs": 3, "patience": 2, "min_steps": 0, "hidden": 32,
                 "scorer_hidden": 16, "decoder_hidden": 16}  # fmt: skip
FAST = {
    "mlp": {"hidden": [64], "weight_decay": [0.01], "max_epochs": 15, "patience": 3},
    "mf": {"dim": [16], "max_epochs": 15, "patience": 3},
    "trouter": SMALL_TROUTER,
    "trouter+": {**SMALL_TROUTER, "candidates": "mixture"},
    "guarded": {"n_boot": 100},
    "auto": {"n_boot": 100},
    "online": {"base_params": {"n_boot": 100}},
}


def routers_to_check() -> list[str]:
    import trouter.routers  # noqa: F401  (registers every router)

    return sorted(name for name, cls in ROUTERS.items() if not cls.needs_labels)


def fixture_queries(n: int) -> list[str]:
    """``n`` distinct real queries from every fixture suite, in a seeded order."""
    texts: list[str] = []
    for suite in ("routerbench", "llmrouter", "routerdc", "routellm-gsm8k", "routellm-mmlu"):
        texts += list(load_suite(suite).texts)
    unique = sorted({t for t in texts if t.strip()})
    assert len(unique) >= n, f"the fixtures hold only {len(unique)} distinct queries"
    order = np.random.default_rng(0).permutation(len(unique))[:n]
    return [unique[i][:4000] for i in order]


def as_dataset(queries: list[str], models: list[str]) -> RoutingDataset:
    """The queries as an unlabelled test split the harness can predict."""
    n, m = len(queries), len(models)
    return RoutingDataset(
        name="parity",
        query_ids=[f"q{i}" for i in range(n)],
        texts=list(queries),
        tasks=np.array(["parity"] * n),
        benchmarks=np.array(["parity"] * n),
        models=[ModelInfo(m) for m in models],
        performance=np.full((n, m), 0.5),
        cost=np.full((n, m), 0.001),
        splits=np.array(["test"] * n),
    )


@pytest.fixture(scope="module")
def queries() -> list[str]:
    return fixture_queries(N_QUERIES)


@pytest.fixture(scope="module")
def train():
    data = load_suite("routerbench")
    return data.split("train"), data.split("validation")


def harness_choices(router, queries: list[str]) -> dict[str, list[str]]:
    test = as_dataset(queries, router.models_)
    prediction = predict_test(router, test)
    return {
        name: [test.model_names[j] for j in decide(prediction, weights).choice]
        for name, weights in SCENARIOS.items()
    }


def cli_choices(router_dir: Path, queries: list[str], policy: str) -> list[str]:
    stdin = "".join(json.dumps({"query": q}) + "\n" for q in queries)
    result = CliRunner().invoke(
        cli_app, ["route", "--model-dir", str(router_dir), "--policy", policy, "--json"],
        input=stdin,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [json.loads(line)["model"] for line in result.stdout.splitlines()]


async def proxy_choices(service, queries: list[str]) -> dict[str, tuple[list, list]]:
    """Per scenario: the batcher's choice for every query, and the model that answered the
    first HTTP_QUERIES chat requests sent through the proxy app."""
    standin = StandIn(models=service.models).start()
    try:
        pool = Pool.openai_compatible(service.models, standin.base_url, None, 1.0, 2.0)
        proxy = create_app(service, pool, ProxySettings(max_attempts=1))
        batcher = RouteBatcher(service)
        transport = httpx.ASGITransport(app=proxy)
        out = {}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            for name in SCENARIOS:
                policy = resolve_policy(name)
                routed = await asyncio.gather(*(batcher.route(q, policy) for q in queries))
                answered = []
                for q in queries[:HTTP_QUERIES]:
                    body = {"model": f"trouter-{name}",
                            "messages": [{"role": "user", "content": q}]}  # fmt: skip
                    reply = await client.post("/v1/chat/completions", json=body)
                    assert reply.status_code == 200, reply.text
                    assert reply.json()["model"] == reply.headers["x-trouter-model"]
                    answered.append(reply.headers["x-trouter-model"])
                out[name] = ([r.model for r in routed], answered)
        await batcher.close()
        return out
    finally:
        standin.stop()


@pytest.mark.parametrize("name", routers_to_check())
def test_every_path_chooses_the_same_model(name, queries, train, tmp_path):
    router = make_router(name, seed=0, **FAST.get(name, {})).fit(*train)
    router_dir = router.save(tmp_path / name)
    expected = harness_choices(router, queries)
    service = trouter.load(router_dir)
    proxied = asyncio.run(proxy_choices(service, queries))
    for policy in SCENARIOS:
        paths = {
            "cli": cli_choices(router_dir, queries, policy),
            "python": [r.model for r in service.route(queries, scenario=policy)],
            "proxy-batcher": proxied[policy][0],
        }
        for path, chosen in paths.items():
            differ = [i for i, (a, b) in enumerate(zip(expected[policy], chosen, strict=True))
                      if a != b]  # fmt: skip
            assert not differ, (
                f"{name}, {policy}: {path} differs from the harness on {len(differ)} of "
                f"{len(queries)} queries, e.g. query {differ[0]}: harness "
                f"{expected[policy][differ[0]]}, {path} {chosen[differ[0]]}"
            )
        assert proxied[policy][1] == expected[policy][:HTTP_QUERIES], f"{name}, {policy}: proxy"
