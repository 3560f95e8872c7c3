"""``trouter.load()`` and RoutingService on a kNN router trained on a real RouterBench slice."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

import trouter
from trouter.data.suites import load_suite
from trouter.encoders import _text_key, get_encoder
from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.llm.pool import Pool
from trouter.routers import make_router
from trouter.serving.api import (
    BudgetError,
    PoolMismatchError,
    RouteResult,
    RoutingRequestError,
    match_pool,
)


@pytest.fixture(scope="session")
def routerbench_router_dir(tmp_path_factory) -> Path:
    """kNN fitted on 300 RouterBench training rows (fixed seed), saved like ``trouter train``."""
    suite = load_suite("routerbench")
    train = suite.split("train")
    rows = np.sort(np.random.default_rng(0).choice(len(train), 300, replace=False))
    router = make_router("knn", k=20, weighting="uniform").fit(train.subset(rows))
    return router.save(tmp_path_factory.mktemp("router") / "knn")


@pytest.fixture(scope="module")
def service(routerbench_router_dir):
    return trouter.load(routerbench_router_dir)


@pytest.fixture(scope="module")
def queries() -> list[str]:
    """Real test queries of all three RouterBench tasks (never seen in training)."""
    test = load_suite("routerbench").split("test")
    picks = [
        i
        for task in ("winogrande", "arc-challenge", "mbpp")
        for i in np.flatnonzero(test.tasks == task)[:8]
    ]
    return [test.texts[i] for i in picks]


def test_single_route_is_the_argmax_of_predicted_utility(service, queries):
    result = service.route(queries[0], scenario="balanced")
    assert isinstance(result, RouteResult)
    assert set(result.performance) == set(result.cost) == set(service.models)
    w = SCENARIOS["balanced"]
    for m in service.models:
        expected = w.performance * result.performance[m] + w.cost * result.cost[m]
        assert result.utility[m] == pytest.approx(expected)
    assert result.model == max(result.utility, key=result.utility.get)
    assert sorted(result.ranking) == sorted(service.models)
    assert result.ranking[0] == result.model
    utilities = [result.utility[m] for m in result.ranking]
    assert utilities == sorted(utilities, reverse=True)


def test_batch_matches_single_calls(service, queries):
    batch = service.route(queries[:6], scenario="cost-first")
    singles = [service.route(q, scenario="cost-first") for q in queries[:6]]
    assert [r.model for r in batch] == [r.model for r in singles]
    for b, s in zip(batch, singles, strict=True):
        for m in service.models:
            assert b.performance[m] == pytest.approx(s.performance[m], abs=1e-5)


def test_policies_trade_performance_against_cost(service, queries):
    chosen = {name: service.route(queries, scenario=name) for name in SCENARIOS}

    def mean(name: str, field: str) -> float:
        return float(np.mean([getattr(r, field)[r.model] for r in chosen[name]]))

    assert (
        mean("cost-first", "cost") <= mean("balanced", "cost") <= mean("performance-first", "cost")
    )
    assert mean("cost-first", "performance") <= mean("performance-first", "performance")
    differs = [
        a.model != b.model
        for a, b in zip(chosen["cost-first"], chosen["performance-first"], strict=True)
    ]
    assert any(differs), "the kNN router should send some query to a different model"


def test_weights_tuple_equals_weights_object(service, queries):
    a = service.route(queries[:4], weights=(0.7, -0.3))
    b = service.route(queries[:4], weights=Weights(0.7, -0.3))
    assert [r.model for r in a] == [r.model for r in b]
    assert a[0].policy == "weights(0.7,-0.3)"


def test_max_normalised_cost_picks_best_performance_within_it(service, queries):
    for limit in (0.02, 0.1, 0.5):
        for r in service.route(queries[:8], max_normalised_cost=limit):
            within = [m for m in service.models if r.cost[m] <= limit]
            if within:
                assert r.cost[r.model] <= limit
                assert r.performance[r.model] == max(r.performance[m] for m in within)
                assert set(r.utility) == set(within)
            else:
                assert r.model == min(r.cost, key=r.cost.get)
    # A limit below every predicted cost falls back to the cheapest predicted model.
    r = service.route(queries[0], max_normalised_cost=0.0)
    assert r.model == min(r.cost, key=r.cost.get)
    # A limit of 1 (the dearest call seen in training) is "best predicted performance".
    unlimited = service.route(queries[0], max_normalised_cost=1.0)
    assert unlimited.model == service.route(queries[0], weights=(1.0, 0.0)).model


def test_budget_is_deprecated_and_not_dollars(service, queries):
    with pytest.warns(DeprecationWarning, match="max_normalised_cost"):
        old = service.route(queries[0], budget=0.1)
    assert old.model == service.route(queries[0], max_normalised_cost=0.1).model
    # budget=5 read as five dollars was silently accepted; it is outside [0, 1]
    with pytest.warns(DeprecationWarning), pytest.raises(RoutingRequestError, match="max_cost_usd"):
        service.route(queries[0], budget=5)


def test_max_cost_usd_picks_the_best_model_under_the_dollar_limit(routerbench_router_dir, queries):
    names = trouter.load(routerbench_router_dir).models
    pool = Pool.from_dict({"models": [
        {"name": m, "litellm_model": f"openai/{m}", "input_price_per_mtok": 0.1 * (i + 1),
         "output_price_per_mtok": 0.4 * (i + 1)} for i, m in enumerate(names)]})  # fmt: skip
    service = trouter.load(routerbench_router_dir, pool)
    query = queries[0]
    free = service.route(query)
    usd = free.cost_usd
    tokens = max(1, -(-len(query) // 4))
    assert usd == pytest.approx(
        {m: (tokens * 0.1 + 256 * 0.4) * (i + 1) / 1e6 for i, m in enumerate(names)}
    )
    assert free.cost[free.model] <= 1.0  # the normalised figure is kept beside USD
    dear = max(usd, key=usd.get)
    cheap = min(usd, key=usd.get)
    limit = (usd[cheap] + sorted(usd.values())[1]) / 2  # only the cheapest fits
    r = service.route(query, max_cost_usd=limit)
    assert r.model == cheap and r.ranking == (cheap,)
    assert set(r.utility) == {cheap}
    assert r.policy == f"balanced,max-cost-usd<={limit:g}"
    loose = service.route(query, scenario="performance-first", max_cost_usd=usd[dear] * 2)
    assert loose.model == service.route(query, scenario="performance-first").model
    with pytest.raises(BudgetError, match="cheapest predicted call costs"):
        service.route(query, max_cost_usd=usd[cheap] / 10)
    with pytest.raises(RoutingRequestError, match="dollars"):
        service.route(query, max_cost_usd=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "empty query"),
        ({"query": "   \n"}, "empty query"),
        ({"query": "hi", "scenario": "cheap"}, "unknown scenario 'cheap'"),
        ({"query": "hi", "scenario": "balanced", "max_normalised_cost": 0.2}, "only one of"),
        ({"query": "hi", "max_normalised_cost": -0.1}, "in \\[0, 1\\]"),
        ({"query": "hi", "max_normalised_cost": 5}, "in \\[0, 1\\]"),
        ({"query": "hi", "weights": (1.0,)}, "weights must be"),
        ({"query": ["fine", 3]}, "must be a string"),
    ],
)
def test_bad_routing_calls_are_refused(service, kwargs, message):
    with pytest.raises(RoutingRequestError, match=message):
        service.route(**kwargs)


def test_new_queries_are_not_cached(service):
    """Serving must not write a cache shard or keep a vector per request (other processes may
    write shards to the same folder meanwhile, so the check is on this query's key)."""
    encoder = get_encoder(service.encoder)
    query = f"a query this test invents: route me, do not cache me {uuid.uuid4().hex}"
    before = set(encoder.cache_path.glob("*.npz"))
    service.route([query])
    key = _text_key(query)
    assert key not in encoder._vectors
    for shard in set(encoder.cache_path.glob("*.npz")) - before:
        with np.load(shard) as data:
            assert key not in set(data["keys"].tolist())


def test_pool_must_serve_every_router_model(service):
    router_models = service.models
    with pytest.raises(PoolMismatchError) as err:
        match_pool(router_models, router_models[:3])
    text = str(err.value)
    assert router_models[5] in text and "router models" in text and "routes_as" in text
    same = {m: m for m in router_models}
    assert match_pool(router_models, router_models) == same
    assert match_pool(router_models, router_models[:3], allow_partial=True) == {
        m: m for m in router_models[:3]
    }
    with pytest.raises(PoolMismatchError, match="no model in common"):
        match_pool(router_models, [], allow_partial=True)


def test_a_pool_model_the_router_never_saw_is_refused(service):
    router_models = service.models
    with pytest.raises(PoolMismatchError) as err:
        match_pool(router_models, [*router_models, "gpt-4o"])
    assert "'gpt-4o'" in str(err.value) and "routes_as: <router model>" in str(err.value)
    with pytest.raises(PoolMismatchError, match="routes_as 'gpt-5'"):
        match_pool(router_models, {"gpt-4o": "gpt-5"})
    with pytest.raises(PoolMismatchError, match="same trained model"):
        match_pool(router_models, {"a": router_models[0], "b": router_models[0]})


def test_routes_as_routes_a_current_pool_by_the_trained_models(
    routerbench_router_dir, service, queries, tmp_path
):
    trained = service.models
    stand_ins = {"gpt-4o": "gpt-4-1106-preview", "gpt-4o-mini": "gpt-3.5-turbo-1106",
                 "llama-3.1-8b": "meta/llama-2-70b-chat"}  # fmt: skip
    assert set(stand_ins.values()) <= set(trained)
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "models:\n"
        + "".join(
            f"  - name: {name}\n    litellm_model: openai/{name}\n"
            f"    api_base: http://127.0.0.1:9/v1\n    routes_as: {as_}\n"
            f"    input_price_per_mtok: {price}\n    output_price_per_mtok: {price * 4}\n"
            for (name, as_), price in zip(stand_ins.items(), (2.5, 0.15, 0.05), strict=True)
        )
    )
    mine = trouter.load(routerbench_router_dir, pool_file)
    assert sorted(mine.models) == sorted(stand_ins)
    for query in queries[:8]:
        for scenario in SCENARIOS:
            r = mine.route(query, scenario=scenario)
            assert set(r.performance) == set(stand_ins) and r.routes_as == stand_ins[r.model]
            # the same choice as the trained router restricted to the stand-ins' models
            full = service.route(query, scenario=scenario)
            best = max(stand_ins, key=lambda m: (full.utility[stand_ins[m]],
                                                 -full.cost[stand_ins[m]]))  # fmt: skip
            assert r.model == best
            assert r.performance[r.model] == pytest.approx(full.performance[r.routes_as])
        # USD from the pool's prices, not LiteLLM's for the trained names
        r = mine.route(query)
        tokens = max(1, -(-len(query) // 4))
        assert r.cost_usd["gpt-4o"] == pytest.approx((tokens * 2.5 + 256 * 10.0) / 1e6)


def test_a_missing_price_is_a_warning_and_a_gauge_never_zero_dollars(
    routerbench_router_dir, caplog
):
    import asyncio

    import httpx

    from trouter.serving.proxy import create_app

    names = trouter.load(routerbench_router_dir).models
    entries = [{"name": m, "litellm_model": f"openai/{m}", "input_price_per_mtok": 1.0,
                "output_price_per_mtok": 2.0} for m in names[2:]]  # fmt: skip
    entries += [
        {"name": names[0], "litellm_model": "openai/my-private-model",
         "input_price_per_mtok": 1.0},  # output price: nowhere
        {"name": names[1], "litellm_model": "openai/another-private-model"},
    ]  # fmt: skip
    pool = Pool.from_dict({"models": entries}, source="pool.yaml")
    half = pool.endpoint(names[0])
    assert half.cost(1000, 1000) is None and not half.priced  # was 0.001: output as $0
    assert pool.unpriced() == {names[0]: ["output"], names[1]: ["input", "output"]}
    with caplog.at_level("WARNING", logger="trouter.serving"):
        service = trouter.load(routerbench_router_dir, pool)
    warned = [r.getMessage() for r in caplog.records]
    assert any(names[0] in w and "no output price" in w and "not $0" in w for w in warned)
    assert any(names[1] in w and "no input and no output price" in w for w in warned)
    result = service.route("What is the capital of Australia?")
    assert names[0] not in result.cost_usd and names[1] not in result.cost_usd

    async def scrape() -> str:
        app = create_app(service, pool)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return (await c.get("/metrics")).text

    metrics = asyncio.run(scrape())
    assert f'trouter_pool_model_unpriced{{missing="output",model="{names[0]}"}} 1.0' in metrics
    assert f'trouter_pool_model_unpriced{{missing="input+output",model="{names[1]}"}} 1.0' in (
        metrics
    )
