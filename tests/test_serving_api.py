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
from trouter.routers import make_router
from trouter.serving.api import (
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


def test_budget_picks_best_performance_within_budget(service, queries):
    for budget in (0.02, 0.1, 0.5):
        for r in service.route(queries[:8], budget=budget):
            within = [m for m in service.models if r.cost[m] <= budget]
            if within:
                assert r.cost[r.model] <= budget
                assert r.performance[r.model] == max(r.performance[m] for m in within)
                assert set(r.utility) == set(within)
            else:
                assert r.model == min(r.cost, key=r.cost.get)
    # A budget below every predicted cost falls back to the cheapest predicted model.
    r = service.route(queries[0], budget=0.0)
    assert r.model == min(r.cost, key=r.cost.get)
    # A budget above every cost is "best predicted performance".
    unlimited = service.route(queries[0], budget=10.0)
    assert unlimited.model == service.route(queries[0], weights=(1.0, 0.0)).model


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": ""}, "empty query"),
        ({"query": "   \n"}, "empty query"),
        ({"query": "hi", "scenario": "cheap"}, "unknown scenario 'cheap'"),
        ({"query": "hi", "scenario": "balanced", "budget": 0.2}, "only one of"),
        ({"query": "hi", "budget": -0.1}, "budget"),
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
        match_pool(router_models, router_models[:3] + ["my-extra-model"])
    text = str(err.value)
    assert router_models[5] in text and "my-extra-model" in text and "router models" in text
    assert match_pool(router_models, [*router_models, "extra"]) == router_models
    assert match_pool(router_models, router_models[:3], allow_partial=True) == router_models[:3]
    with pytest.raises(PoolMismatchError, match="no model in common"):
        match_pool(router_models, ["x"], allow_partial=True)
