"""``POST /v1/feedback`` and learning from it, on real RouterBench rows and a SQLite store."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from trouter.data.suites import load_suite
from trouter.evaluation.folds import Fold
from trouter.evaluation.online import OnlineConfig, stream_folds
from trouter.routers.base import make_router
from trouter.routers.online import OnlineRouter
from trouter.serving.api import RoutingService
from trouter.serving.feedback import feedback_router, parse_feedback
from trouter.serving.learning import FeedbackLoop, LearningError, request_id
from trouter.serving.requests import ProxyError
from trouter.store import Decision, Feedback, Store


@pytest.fixture(scope="module")
def fold() -> Fold:
    """mbpp rows streamed; the base (best-single) knows only the other tasks."""
    (fold,) = stream_folds(load_suite("routerbench"), 0, OnlineConfig(tasks=("mbpp",)))
    return fold


def _service(fold: Fold) -> RoutingService:
    base = make_router("best-single").fit(fold.train, fold.validation)
    router = OnlineRouter.around(base, fold.train)
    return RoutingService(router, prices={m: None for m in router.models_})


@pytest.fixture
def loop(fold, tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'fb.db'}")
    loop = FeedbackLoop(store, _service(fold), learn=True, fold_interval_s=0.05)
    loop.start()
    yield loop
    loop.close()
    store.close()


def _app(loop: FeedbackLoop) -> TestClient:
    app = FastAPI()
    app.include_router(feedback_router(loop))

    @app.exception_handler(ProxyError)
    async def _error(request, err: ProxyError):
        return err.response()

    return TestClient(app)


def _route(loop: FeedbackLoop, text: str, rid: str) -> str:
    result = loop.service.route(text)
    loop.record(rid, result, result.model, text, {"prompt_tokens": 9}, 0.001, 3.0)
    return result.model


def test_scores_thumbs_and_ratings_map_to_zero_one() -> None:
    assert parse_feedback({"request_id": "r", "thumbs": "up"}).score == 1.0
    assert parse_feedback({"request_id": "r", "thumbs": "down"}).score == 0.0
    assert parse_feedback({"request_id": "r", "rating": 4}).score == 0.75
    fb = parse_feedback({"request_id": "r", "score": 0.3, "source": "judge"}, "hdr")
    assert (fb.score, fb.source, fb.event_id) == (0.3, "judge", "hdr")
    for bad in (
        {"request_id": "r"},
        {"request_id": "r", "score": 1, "thumbs": "up"},
        {"request_id": "r", "score": 1.5},
        {"request_id": "r", "rating": 6},
        {"request_id": "r", "score": 1, "source": "me"},
        {"request_id": "r", "score": 1, "extra": 1},
        ["r", 1],
    ):
        with pytest.raises(ProxyError) as err:
            parse_feedback(bad)
        assert err.value.status == 400


def test_request_ids_from_clients_are_kept_when_usable() -> None:
    assert request_id("my-id-42") == "my-id-42"
    assert len(request_id(None)) == 32
    assert request_id("x" * 500) != "x" * 500
    assert request_id("bad\nid") != "bad\nid"


def test_fresh_request_ids_are_uuid7_and_sort_by_time() -> None:
    # the decision log's primary key: ids that sort by time keep its index appends cheap
    earlier = {request_id(None) for _ in range(200)}
    time.sleep(0.002)
    later = request_id(None)
    assert len(earlier) == 200  # the random bits differ within one millisecond
    assert all(rid < later for rid in earlier)
    parsed = uuid.UUID(later)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs(int(later[:12], 16) / 1000 - time.time()) < 5  # its leading 48 bits: the ms


def test_feedback_statuses_and_openai_errors(loop, fold) -> None:
    client = _app(loop)
    _route(loop, fold.test.texts[0], "req-1")  # still queued: the post waits for the flush
    ok = client.post("/v1/feedback", json={"request_id": "req-1", "thumbs": "up"})
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
    again = client.post("/v1/feedback", json={"request_id": "req-1", "thumbs": "up"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    keyed = {"request_id": "req-1", "rating": 2}
    assert (
        client.post("/v1/feedback", json=keyed, headers={"idempotency-key": "k"}).json()["status"]
        == "accepted"
    )
    assert (
        client.post("/v1/feedback", json=keyed, headers={"idempotency-key": "k"}).json()["status"]
        == "duplicate"
    )
    missing = client.post("/v1/feedback", json={"request_id": "nope", "score": 1})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "request_not_found"
    now = time.time()
    loop.store.write_decisions([Decision("old", now - 10, now - 1, "online", "m")])
    gone = client.post("/v1/feedback", json={"request_id": "old", "score": 1})
    assert gone.status_code == 410 and gone.json()["error"]["type"] == "invalid_request_error"
    bad = client.post("/v1/feedback", json={"request_id": "req-1", "score": 2})
    assert bad.status_code == 400 and "score" in bad.json()["error"]["message"]
    assert len([e for e in loop.store.served_events() if e["request_id"] == "req-1"]) == 2


def test_feedback_is_learned_and_a_second_process_folds_it_in(fold, tmp_path) -> None:
    """Served feedback and background labels posted to one loop reach the router of another
    loop on the same store; rebuilding from the store gives the same statistics."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = FeedbackLoop(Store.open(url), _service(fold), learn=True, fold_interval_s=0.05)
    b = FeedbackLoop(Store.open(url), _service(fold), learn=True, fold_interval_s=0.05)
    a.start()
    b.start()
    stream, names = fold.test, fold.test.model_names
    served_before = Counter(_route(b, stream.texts[t], f"probe-{t}") for t in range(60, 120))
    for t in range(60):
        model = _route(a, stream.texts[t], f"q{t}")
        a.log.wait_written(f"q{t}", 5)
        score = float(stream.performance[t, names.index(model)])
        assert a.add_feedback(Feedback(f"q{t}", score)) == "accepted"
        scores = dict(zip(names, stream.performance[t].tolist(), strict=True))
        a.store.add_label(f"label-{t}", scores, request_id=f"q{t}", spend_usd=0.01)
    deadline = time.time() + 10
    while b.learner.applied < 120 and time.time() < deadline:
        time.sleep(0.05)
    assert a.learner.fold() >= 0 and a.learner.applied == 120
    assert b.learner.applied == 120  # 60 served events + 60 labels, within the deadline
    np.testing.assert_allclose(a.service.router.stats_.count, b.service.router.stats_.count)
    served_after = Counter(b.service.route(stream.texts[t]).model for t in range(60, 120))
    assert served_after != served_before  # the labels moved the routing of unseen mbpp rows
    mean = lambda c: np.mean([stream.performance[t, names.index(m)] for t, m in c])  # noqa: E731
    routed = [(t, b.service.route(stream.texts[t]).model) for t in range(60, len(stream.texts))]
    before = [(t, served_before.most_common(1)[0][0]) for t in range(60, len(stream.texts))]
    assert mean(routed) > mean(before)
    restarted = FeedbackLoop(Store.open(url), _service(fold), learn=True)
    restarted.start()
    np.testing.assert_allclose(
        restarted.service.router.stats_.sum_perf, a.service.router.stats_.sum_perf
    )
    for loop in (a, b, restarted):
        loop.close()
        loop.store.close()


def test_learning_needs_an_online_router(fold, tmp_path) -> None:
    plain = make_router("best-single").fit(fold.train, fold.validation)
    service = RoutingService(plain, prices={m: None for m in plain.models_})
    store = Store.open(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(LearningError):
        FeedbackLoop(store, service, learn=True)
    only_logging = FeedbackLoop(store, service)  # logs decisions without features
    result = service.route(fold.test.texts[0])
    only_logging.record("r0", result, result.model, fold.test.texts[0], None, None, 1.0)
    only_logging.close()
    row = store.decision("r0")
    assert row is not None and row.cell is None and set(row.features) == {"performance", "cost"}
    store.close()


def test_a_pool_file_alone_gives_a_router_that_learns_from_labels(tmp_path) -> None:
    """No trained router: the price prior serves the cheap model; labels that show the
    pricier one far better move performance-first to it (balanced sees a tie and stays)."""
    from trouter.llm.pool import Pool
    from trouter.serving.learning import price_prior_router

    entries = [("small", 0.1, 0.4), ("big", 3.0, 15.0), ("mid", None, None)]
    pool = Pool.from_dict({"models": [
        {"name": n, "litellm_model": f"openai/{n}", "api_base": "http://127.0.0.1:9/v1",
         **({"input_price_per_mtok": i, "output_price_per_mtok": o} if i else {})}
        for n, i, o in entries
    ]})  # fmt: skip
    router = price_prior_router(pool)
    assert router.models_ == ["small", "big", "mid"]
    np.testing.assert_allclose(router.pool_cost_, [0.0, 1.0, 0.5])  # mid: the median price
    service = RoutingService(router, prices={e.name: e.prices for e in pool.models})
    first = {s: service.route("hi", scenario=s).model for s in ("balanced", "performance-first")}
    assert first == {"balanced": "small", "performance-first": "small"}
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 'p.db'}"), service, learn=True)
    loop.start()
    for i in range(30):
        result = service.route(f"question {i}")
        loop.record(f"r{i}", result, result.model, result.query, None, None, 1.0)
        assert loop.log.wait_written(f"r{i}", 5)
        loop.store.add_label(f"l{i}", {"small": 0.0, "big": 1.0, "mid": 0.3}, request_id=f"r{i}")
    assert loop.learner.fold() == 30
    assert service.route("hi", scenario="performance-first").model == "big"
    assert service.route("hi", scenario="balanced").model == "small"
    loop.close()
    loop.store.close()


def test_replies_describe_themselves(fold) -> None:
    from trouter.serving.learning import response_fields, response_headers

    service = _service(fold)
    route = service.route(fold.test.texts[0])
    fields = response_fields("rid-1", route, route.model, "trouter-balanced", 0.00123)
    headers = response_headers(fields)
    assert headers["x-trouter-request-id"] == "rid-1"
    assert headers["x-trouter-model"] == route.model
    assert headers["x-trouter-cost"] == "0.00123000"
    assert headers["x-trouter-exploration"] == "false"
    assert "x-trouter-predicted-cost" not in headers  # no prices in this pool
    assert response_headers(response_fields("r", None, "m", "p", None)).keys() == {
        "x-trouter-request-id", "x-trouter-model", "x-trouter-policy", "x-trouter-exploration"
    }  # fmt: skip


def test_serving_and_logging_an_online_router_write_no_embedding_shards(fold, tmp_path) -> None:
    """Each new query used to leave a cache shard on disk (and its vector in memory for
    good): the online router's guarded choice encodes again while the models are ranked,
    outside the service's transient scope. The decision log's features must not either."""
    from pathlib import Path

    from trouter.encoders import get_encoder

    base = make_router("knn", k=5, encoder="static").fit(fold.train)
    router = OnlineRouter.around(base, fold.train)
    service = RoutingService(router, prices={m: None for m in router.models_})
    encoder = get_encoder(router.encoder)
    shards = lambda: len(list(Path(encoder.cache_path).glob("*.npz")))  # noqa: E731
    before = shards()
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 'e.db'}"), service)
    for i in range(10):
        result = service.route(f"{fold.test.texts[i]} (asked again, {time.time()})")
        loop.record(f"e{i}", result, result.model, result.query, None, None, 1.0)
    loop.close()
    assert shards() == before
    assert loop.store.decision("e9").features["prior_performance"]
    loop.store.close()


def test_a_row_committed_below_the_watermark_is_still_folded(fold, tmp_path) -> None:
    """PostgreSQL numbers rows at insert and commits them in any order: row 5 may become
    visible after rows 6..10 were folded. The fold re-reads behind its watermark."""
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    loop = FeedbackLoop(store, _service(fold), learn=True)  # not started: folds by hand
    texts = fold.test.texts
    for i in range(10):
        _route(loop, texts[i], f"w{i}")
    assert loop.log.wait_written("w9", 5)
    insert = (
        "INSERT INTO feedback (seq, event_id, request_id, score, source, created_at, "
        "expires_at) VALUES (?, ?, ?, 1.0, 'user', ?, ?)"
    )
    now = time.time()
    for i in [*range(1, 5), *range(6, 11)]:
        loop.store.backend.execute(insert, (i, f"w{i - 1}", f"w{i - 1}", now, now + 60))
    loop.learner.fold()
    assert loop.learner.applied == 9
    loop.store.backend.execute(insert, (5, "w4", "w4", now, now + 60))  # the late commit
    assert loop.learner.fold() == 1 and loop.learner.applied == 10
    loop.close()
    store.close()


def test_imported_labels_teach_the_served_router(fold, tmp_path) -> None:
    """``trouter feedback import-labels`` with each mbpp row's real scores for 60 logged
    requests: the router's choices on the other mbpp rows score better afterwards."""
    import json

    from typer.testing import CliRunner

    from trouter.cli import app

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    loop = FeedbackLoop(Store.open(url), _service(fold), learn=True)  # folds by hand
    stream, names = fold.test, fold.test.model_names
    for t in range(60):
        _route(loop, stream.texts[t], f"q{t}")
    assert loop.log.wait_written("q59", 5)
    lines = [{"request_id": f"q{t}", "judge": "grader",
              "scores": dict(zip(names, stream.performance[t].tolist(), strict=True))}
             for t in range(60)]  # fmt: skip
    lines.append({"request_id": "never-logged", "scores": {names[0]: 1.0}})
    good = tmp_path / "labels.jsonl"
    good.write_text("".join(json.dumps(line) + "\n" for line in lines))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"request_id": "q0", "scores": {names[0]: 3}}) + "\n")
    runner = CliRunner()
    refused = runner.invoke(app, ["feedback", "import-labels", str(bad), "--store", url])
    assert refused.exit_code == 2 and "bad.jsonl:1" in refused.output
    out = runner.invoke(app, ["feedback", "import-labels", str(good), "--store", url])
    assert out.exit_code == 0 and "60 accepted, 0 duplicate, 1 unknown" in out.output
    again = runner.invoke(app, ["feedback", "import-labels", str(good), "--store", url])
    assert "0 accepted, 60 duplicate" in again.output
    rest = range(60, len(stream.texts))
    served = lambda: [names.index(loop.service.route(stream.texts[t]).model) for t in rest]  # noqa: E731
    before = np.mean([stream.performance[t, j] for t, j in zip(rest, served(), strict=True)])
    assert loop.learner.fold() == 60
    after = np.mean([stream.performance[t, j] for t, j in zip(rest, served(), strict=True)])
    assert after > before + 0.05, (before, after)
    loop.close()
    loop.store.close()


def test_feedback_for_a_decision_still_queued_elsewhere_is_accepted(fold, tmp_path) -> None:
    """Two workers: the decision waits in one worker's queue while the feedback reaches the
    other. The second looks again after one flush interval instead of answering 404."""
    import threading

    url = f"sqlite:///{tmp_path / 'q.db'}"
    taker = FeedbackLoop(Store.open(url), _service(fold))
    router = FeedbackLoop(Store.open(url), _service(fold))
    router.log.interval_s = 0.2
    result = router.service.route(fold.test.texts[0])
    late = threading.Timer(
        0.15, router.record, ("elsewhere", result, result.model, result.query, None, None, 1.0)
    )
    late.start()  # logged after the post arrives, written one flush later
    assert taker.add_feedback(Feedback("elsewhere", 1.0)) == "accepted"
    assert taker.add_feedback(Feedback("never", 1.0)) == "unknown"
    for loop in (taker, router):
        loop.close()
        loop.store.close()


def test_exploration_is_capped_and_logged_with_its_propensity(tmp_path) -> None:
    from trouter.llm.pool import Pool
    from trouter.serving.api import resolve_policy
    from trouter.serving.learning import service_from_pool

    pool = Pool.openai_compatible(["small", "big"], "http://127.0.0.1:9/v1", "K", 1.0, 2.0)
    quiet = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 'a.db'}"), service_from_pool(pool))
    assert quiet.explorer() is None  # explore = 0: the planner is left alone
    service = service_from_pool(pool, explore=0.3)
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 'b.db'}"), service)
    explore = loop.explorer()
    balanced = resolve_policy("balanced")
    picks = [explore(f"question {i}", balanced, ["small", "big"]) for i in range(400)]
    explored = [p for p in picks if p[2]]
    assert 0.2 < len(explored) / len(picks) <= 0.4  # capped at the 0.3 share, with noise
    assert all(p[1] < 1 and p[0][0] != "small" for p in explored)
    kept = [p for p in picks if not p[2]]
    assert all(p[0] == ["small", "big"] and p[1] < 1 for p in kept)  # exploit, its propensity
    budget = resolve_policy("balanced", max_cost_usd=1.0)
    assert explore("q", budget, ["small", "big"]) == (["small", "big"], 1.0, False, {})
    for each in (quiet, loop):
        each.close()
        each.store.close()


def test_served_feedback_alone_moves_routing_when_the_router_explores(tmp_path) -> None:
    """Two equally priced models, the pool's first one served by default; users score
    'big' 0.8 and 'small' 0.3 of the time. Without exploration the router never tries
    'big'; with 20% it does, and the served feedback alone moves all traffic to it."""
    import random

    from trouter.llm.pool import Pool
    from trouter.serving.api import resolve_policy
    from trouter.serving.learning import service_from_pool
    from trouter.serving.planning import Plan

    pool = Pool.openai_compatible(["small", "big"], "http://127.0.0.1:9/v1", "K", 1.0, 2.0)
    service = service_from_pool(pool, explore=0.2)
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 's.db'}"), service, learn=True)
    explore, policy = loop.explorer(seed=0), resolve_policy("balanced")
    quality, draw = {"small": 0.3, "big": 0.8}, random.Random(0)
    served = []
    for i in range(200):
        route = service.route(f"question {i}", scenario="balanced")
        ranking, propensity, explored, _ = explore(route.query, policy, list(route.ranking))
        plan = Plan("trouter", ranking, True, None, False, route, propensity, explored)
        loop.answered(f"r{i}", plan, ranking[0], None, None, 0.0)
        assert loop.log.wait_written(f"r{i}", 5)
        loop.add_feedback(Feedback(f"r{i}", float(draw.random() < quality[ranking[0]])))
        if i % 10 == 9:
            loop.learner.fold()
        served.append(ranking[0])
    assert served[0] == "small" and "big" in served[:50]
    assert served[-50:] == ["big"] * 50
    logged = loop.store.decisions()
    assert {d.explored for d in logged} == {True, False}
    loop.close()
    loop.store.close()
    plain = service_from_pool(pool)  # no exploration: 'small' and its poor scores only
    still = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 'p.db'}"), plain, learn=True)
    for i in range(60):
        result = plain.route(f"question {i}", scenario="balanced")
        still.record(f"p{i}", result, result.model, result.query, None, None, 1.0)
        assert still.log.wait_written(f"p{i}", 5)
        still.add_feedback(Feedback(f"p{i}", float(draw.random() < quality[result.model])))
    still.learner.fold()
    assert plain.route("one more", scenario="balanced").model == "small"
    still.close()
    still.store.close()


def test_the_log_keeps_the_routes_own_prior_without_recomputing_it(fold, loop, monkeypatch):
    """A routed decision carries the online router's prior and cell to the log, so the
    writer does not run the base again; a decision without them (a route the router did not
    make) still gets them recomputed, and both equal what the router computes."""
    texts = list(fold.test.texts[:6])
    router = loop.service.router
    expected = router.features(texts)
    result = loop.service.route(texts[0])
    assert "logged" not in result.to_dict()
    np.testing.assert_allclose(result.logged["prior_performance"], expected["performance"][0])
    calls = []
    features = router.features
    monkeypatch.setattr(router, "features", lambda q, *a: calls.append(len(q)) or features(q, *a))
    for i, text in enumerate(texts[:5]):
        _route(loop, text, f"carried-{i}")
    bare = loop.service.route(texts[5])
    loop.record("bare", replace(bare, logged=None), bare.model, texts[5], None, None, 1.0)
    deadline = time.time() + 5
    while loop.log.written < 6 and time.time() < deadline:
        time.sleep(0.02)
    assert sum(calls) == 1  # only the bare decision's prior was recomputed
    for i, rid in enumerate([*(f"carried-{i}" for i in range(5)), "bare"]):
        row = loop.store.decision(rid)
        assert row.cell == int(expected["cell"][i])
        np.testing.assert_allclose(row.features["prior_performance"],
                                   expected["performance"][i], atol=1e-6)  # fmt: skip


def test_the_served_ab_arm_travels_through_the_log_back_into_the_router(fold, tmp_path) -> None:
    """challenge > 0: the planner's draw puts the proposal first on its share of the
    disagreeing queries; the arm is logged with the decision, comes back with its feedback
    from the store, and the learner's fold lets the router's served test pass."""
    from trouter.serving.api import resolve_policy
    from trouter.serving.planning import Plan

    base = make_router("knn").fit(fold.train, fold.validation)
    router = OnlineRouter.around(base, fold.train, challenge=0.3)
    service = RoutingService(router, prices={m: None for m in router.models_})
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 's.db'}"), service, learn=True)
    explore, policy = loop.explorer(seed=0), resolve_policy("balanced")
    arms = {}
    for i in range(240):
        route = service.route(fold.test.texts[i % len(fold.test)], scenario="balanced")
        ranking, propensity, explored, arm = explore(route.query, policy, list(route.ranking))
        plan = Plan("trouter", ranking, True, None, False, route, propensity, explored, arm)
        loop.answered(f"r{i}", plan, ranking[0], None, None, 0.0)
        arms[f"r{i}"] = arm.get("ab_arm")
        assert loop.log.wait_written(f"r{i}", 5)
        # the proposals win wherever they were drawn: the test must find it
        loop.add_feedback(Feedback(f"r{i}", float(arm.get("ab_arm") == "treat")))
        if i % 20 == 19:
            loop.learner.fold()
    treated = [rid for rid, a in arms.items() if a == "treat"]
    assert treated and any(a == "control" for a in arms.values())
    events = {e["request_id"]: e for e in loop.store.served_events()}
    assert all(events[rid]["ab_arm"] == "treat" for rid in treated)
    assert all("ab_arm" not in events[rid] for rid, a in arms.items() if a is None)
    assert router.ab_treated_.sum() == len(treated)
    assert router.challenge_earned(policy.weights)
    loop.close()
    loop.store.close()


def test_the_linear_cells_features_travel_through_the_log_into_the_router(fold, tmp_path):
    """With ``cell_by="linear"`` each logged decision keeps the query's projected embedding
    (carried by the route, or recomputed for a bare one); its feedback and its label come
    back from the store with it, and the router's linear sums learn from both."""
    base = make_router("best-single").fit(fold.train, fold.validation)
    router = OnlineRouter.around(base, fold.train, cell_by="linear", linear_dims=8)
    service = RoutingService(router, prices={m: None for m in router.models_})
    loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 's.db'}"), service, learn=True)
    texts, names = list(fold.test.texts[:4]), fold.test.model_names
    expected = router.features(texts)["embedding"]
    for i, text in enumerate(texts[:3]):
        _route(loop, text, f"r{i}")
    bare = service.route(texts[3])
    loop.record("r3", replace(bare, logged=None), bare.model, texts[3], None, None, 1.0)
    for i in range(4):
        assert loop.log.wait_written(f"r{i}", 5)
        loop.add_feedback(Feedback(f"r{i}", 1.0))
    loop.store.add_label("label-0", dict.fromkeys(names, 0.5), request_id="r0", spend_usd=0.01)
    served = {e["request_id"]: e for e in loop.store.served_events()}
    for i in range(4):
        np.testing.assert_allclose(served[f"r{i}"]["embedding"], expected[i], atol=1e-5)
    (label,) = loop.store.label_events()
    np.testing.assert_allclose(label["embedding"], expected[0], atol=1e-5)
    assert router.stats_.lin_count.sum() == 0
    loop.learner.fold()
    assert router.stats_.lin_count.sum() == pytest.approx(4 + len(names))
    np.testing.assert_allclose(router.label_embedding_[0], expected[0], atol=1e-5)
    loop.close()
    loop.store.close()
