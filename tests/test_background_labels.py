"""Background labelling and sampled judging in the running proxy, against loopback stand-ins.

The pool is two routed models (``small``, ``big``) and a ``judge`` outside the routed set.
The stand-in answers every model with its echo (which names the model); the judge
stand-in gives ``{"score": 1}`` to answers from ``big`` and ``{"score": 0}`` otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from standin import StandIn, echo_responder
from test_feedback_proxy import _metrics
from test_proxy import KEY, KEY_ENV, serving, write_pool

import trouter
from trouter.llm.pool import Pool
from trouter.serving.api import RoutingService
from trouter.serving.background_settings import BackgroundSettings, parse_daily_budget
from trouter.serving.learning import FeedbackLoop, price_prior_router
from trouter.serving.proxy import ProxySettings, create_app
from trouter.store import Store

ROUTED = ["small", "big"]
JUDGE = "judge"


def judge_responder(messages, model: str) -> str:
    if model != JUDGE:
        return echo_responder(messages, model)
    candidate = messages[-1]["content"].split("Candidate answer:")[1]
    return '{"score": 1}' if "big answers" in candidate else '{"score": 0}'


@pytest.fixture
def standin():
    os.environ[KEY_ENV] = KEY
    stand = StandIn(models=[*ROUTED, JUDGE], responder=judge_responder).start()
    yield stand
    stand.stop()
    os.environ.pop(KEY_ENV, None)


def _proxy(standin: StandIn, folder: Path, **background):
    """The online router over ``small`` and ``big``; ``judge`` is in the pool, not routed."""
    routed = Pool.load(write_pool(folder / "routed.yaml", ROUTED, standin.base_url))
    pool = Pool.load(write_pool(folder / "pool.yaml", [*ROUTED, JUDGE], standin.base_url))
    service = RoutingService(
        price_prior_router(routed), prices={e.name: e.prices for e in routed.models}
    )
    # on a fresh cache the first route distils the static encoder (minutes on a loaded
    # machine): done here, not inside a request with a client timeout
    service.route("warm the encoder")
    loop = FeedbackLoop(Store.open(f"sqlite:///{folder / 's.db'}"), service, learn=True,
                        fold_interval_s=0.2)  # fmt: skip
    settings = BackgroundSettings(judge=JUDGE, **{"budget_usd_per_day": 5.0, **background})
    return create_app(service, pool, ProxySettings(), feedback=loop, background=settings), loop


def _chat(client: httpx.Client, base: str, text: str) -> httpx.Response:
    body = {"model": "trouter-balanced", "messages": [{"role": "user", "content": text}]}
    return client.post(f"{base}/v1/chat/completions", json=body, timeout=30)


def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the background work")
        time.sleep(0.05)


def test_a_routed_request_gets_a_background_label_that_the_learner_folds(standin, tmp_path):
    app, loop = _proxy(standin, tmp_path)
    with serving(app) as base, httpx.Client() as client:
        reply = _chat(client, base, "What is 2 plus 3?")
        assert reply.status_code == 200 and reply.json()["model"] == "small"
        rid = reply.headers["x-trouter-request-id"]
        _until(lambda: loop.store.counts()["labels"] == 1)
        events = loop.store.label_events()
        assert [e["scores"] for e in events] == [{"small": 0.0, "big": 1.0}]
        assert standin.calls["big"] == 1  # the other routed model, in the background
        assert standin.calls[JUDGE] == 2  # both answers judged, the served one included
        router = loop.service.router
        _until(lambda: router.stats_.label_count.sum() > 0)  # folded by the learner
        assert f"label:{rid}:background" in router.seen_ids_
        m = _metrics(base)
        assert m[("trouter_background_spend_usd_total", ())] > 0
        assert m[("trouter_background_calls_total", (("kind", "judge"), ("outcome", "ok")))] == 2
        assert m[("trouter_background_calls_total", (("kind", "answer"), ("outcome", "ok")))] == 1
        _, stored_spend = loop.store.label_spend()
        assert stored_spend == pytest.approx(m[("trouter_background_spend_usd_total", ())])


def test_a_streamed_reply_is_labelled_with_the_answer_it_streamed(standin, tmp_path):
    judged: list[str] = []

    def recording(messages, model: str) -> str:
        if model == JUDGE:
            candidate = messages[-1]["content"].split("Candidate answer:")[1]
            judged.append(candidate.split("\n\n")[0].strip())
        return judge_responder(messages, model)

    standin.responder = recording
    app, loop = _proxy(standin, tmp_path)
    body = {"model": "trouter-balanced", "stream": True,
            "messages": [{"role": "user", "content": "What is 2 plus 3?"}]}  # fmt: skip
    with serving(app) as base, httpx.Client() as client:
        reply = client.post(f"{base}/v1/chat/completions", json=body, timeout=30)
        assert reply.status_code == 200 and "data: [DONE]" in reply.text
        _until(lambda: loop.store.counts()["labels"] == 1)
    assert [e["scores"] for e in loop.store.label_events()] == [{"small": 0.0, "big": 1.0}]
    # the served answer was judged whole, as the stream's chunks joined it
    assert sorted(judged) == ["big answers: What is 2 plus 3?", "small answers: What is 2 plus 3?"]


def test_the_daily_budget_stops_background_calls_once_spent(standin, tmp_path):
    app, loop = _proxy(standin, tmp_path, budget_usd_per_day=1e-3)  # about one label's calls
    with serving(app) as base, httpx.Client() as client:
        assert _chat(client, base, "What is 1 plus 1?").status_code == 200
        over = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "done")))
        failed = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "failed")))
        _until(lambda: _metrics(base).get(over, 0) + _metrics(base).get(failed, 0) == 1)
        spent = _metrics(base)[("trouter_background_spend_usd_total", ())]
        assert spent >= 1e-3  # the first job spent the day's budget
        calls = standin.total_calls
        for i in range(3):
            assert _chat(client, base, f"What is {i} times 7?").status_code == 200
        skipped = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "over_budget")))
        _until(lambda: _metrics(base).get(skipped, 0) == 3)
        assert standin.total_calls == calls + 3  # the three served answers, nothing else
        assert _metrics(base)[("trouter_background_spend_usd_total", ())] == spent


def test_workers_on_one_store_share_one_daily_budget(standin, tmp_path):
    """Two proxies (workers or replicas) on one store: once the first has recorded the
    day's budget, the second, which has spent nothing itself, starts no background job."""
    first, first_loop = _proxy(standin, tmp_path, budget_usd_per_day=1e-3)
    second, _ = _proxy(standin, tmp_path, budget_usd_per_day=1e-3)
    done = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "done")))
    skipped = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "over_budget")))
    with serving(first) as one, serving(second) as two, httpx.Client() as client:
        assert _chat(client, one, "What is 1 plus 1?").status_code == 200
        failed = ("trouter_background_jobs_total", (("kind", "label"), ("outcome", "failed")))
        _until(lambda: _metrics(one).get(done, 0) + _metrics(one).get(failed, 0) == 1)
        # recorded where both can see it
        assert sum(first_loop.store.background_spend().values()) >= 1e-3
        calls = standin.total_calls
        for i in range(2):
            assert _chat(client, two, f"What is {i} times 7?").status_code == 200
        _until(lambda: _metrics(two).get(skipped, 0) == 2)
        assert standin.total_calls == calls + 2  # the served answers, nothing in the background
        assert _metrics(two)[("trouter_background_spend_usd_total", ())] == 0


def test_a_judged_answer_records_what_the_judge_cost(standin, tmp_path):
    app, loop = _proxy(standin, tmp_path, judge_rate=1.0, threshold=99.0)  # judge, no labels
    with serving(app) as base, httpx.Client() as client:
        assert _chat(client, base, "What is 2 plus 2?").status_code == 200
        _until(lambda: "judge" in loop.store.background_spend())
        spent = _metrics(base)[("trouter_background_spend_usd_total", ())]
    assert loop.store.background_spend() == pytest.approx({"judge": spent})


def test_a_hanging_or_failing_background_model_never_delays_or_fails_the_user(standin, tmp_path):
    app, loop = _proxy(standin, tmp_path)
    with serving(app) as base, httpx.Client() as client:
        assert _chat(client, base, "warm the encoder").status_code == 200
        _until(lambda: loop.store.counts()["labels"] == 1)
        standin.hang_next(2, 20.0, model="big")
        for i in range(2):
            t0 = time.perf_counter()
            reply = _chat(client, base, f"What is {i} minus 4?")
            assert reply.status_code == 200 and reply.json()["model"] == "small"
            assert time.perf_counter() - t0 < 2.0  # the big call hangs 20 s in the background
        _until(lambda: standin.calls["big"] == 3)  # both background calls are hanging now
        standin.fail_next(5, 500, model="big")
        standin.fail_next(5, 500, model=JUDGE)
        reply = _chat(client, base, "What is 9 minus 4?")
        assert reply.status_code == 200 and reply.json()["model"] == "small"
        errors = ("trouter_background_calls_total", (("kind", "answer"), ("outcome", "error")))
        # the hung calls hold two workers; the failing call is the third one
        _until(lambda: _metrics(base).get(errors, 0) >= 1)


def test_judge_rate_records_judge_feedback_on_served_answers(standin, tmp_path):
    app, loop = _proxy(standin, tmp_path, judge_rate=1.0, threshold=99.0)  # judging, no labels
    with serving(app) as base, httpx.Client() as client:
        rids = []
        for i in range(3):
            reply = _chat(client, base, f"What is {i} plus 10?")
            rids.append(reply.headers["x-trouter-request-id"])
        _until(lambda: len(loop.store.feedback_rows()) == 3)
    rows = loop.store.feedback_rows()
    assert sorted(r[0] for r in rows) == sorted(rids)
    assert {(r[1], r[2]) for r in rows} == {(0.0, "judge")}  # small's answers scored 0
    assert standin.calls["big"] == 0 and loop.store.counts()["labels"] == 0
    assert standin.calls[JUDGE] == 3


def test_daily_budget_spelling():
    assert parse_daily_budget("5/day") == 5.0 and parse_daily_budget("0.5") == 0.5
    for bad in ("five", "-1/day", "5/week"):
        with pytest.raises(ValueError, match="USD per day"):
            parse_daily_budget(bad)


def test_serve_refuses_judge_options_it_cannot_honour(tmp_path):
    from typer.testing import CliRunner

    from trouter.cli import app

    pool = ["--pool", str(tmp_path / "pool.yaml")]
    frozen = ["serve", "--model-dir", str(tmp_path), *pool]  # no store
    online = ["serve", "--router", "online", "--store", f"sqlite:///{tmp_path / 's.db'}", *pool]
    for args, message in (
        ([*frozen, "--judge", "big"], "--judge needs a store"),
        ([*frozen, "--judge-rate", "0.1"], "--judge-rate needs --judge"),
        ([*online, "--judge", "big", "--label-budget-usd", "5/week"], "USD per day"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_a_pool_model_the_saved_router_never_saw_is_labelled_and_learned(tmp_path):
    """``trouter.load`` of a saved online router with a bigger pool, then served: the
    newcomer's answers are labelled in the background and folded into its arm."""
    os.environ[KEY_ENV] = KEY
    newcomer = "newbie"
    stand = StandIn(models=[*ROUTED, newcomer, JUDGE], responder=judge_responder).start()
    try:
        known = Pool.load(write_pool(tmp_path / "known.yaml", ROUTED, stand.base_url))
        saved = price_prior_router(known).save(tmp_path / "online")
        served = write_pool(tmp_path / "served.yaml", [*ROUTED, newcomer], stand.base_url)
        pool = Pool.load(write_pool(tmp_path / "pool.yaml", [*ROUTED, newcomer, JUDGE],
                                    stand.base_url))  # fmt: skip
        service = trouter.load(saved, served)
        assert newcomer in service.models
        service.route("warm the encoder")
        loop = FeedbackLoop(Store.open(f"sqlite:///{tmp_path / 's.db'}"), service, learn=True,
                            fold_interval_s=0.2)  # fmt: skip
        settings = BackgroundSettings(judge=JUDGE, budget_usd_per_day=5.0)
        app = create_app(service, pool, ProxySettings(), feedback=loop, background=settings)
        with serving(app) as base, httpx.Client() as client:
            assert _chat(client, base, "What is 2 plus 3?").status_code == 200
            _until(lambda: loop.store.counts()["labels"] == 1)
            (event,) = loop.store.label_events()
            assert event["scores"][newcomer] == 0.0 and stand.calls[newcomer] == 1
            router = service.router
            j = router.models_.index(newcomer)
            _until(lambda: len(router.label_perf_) == 1)  # folded by the learner
            assert router.label_perf_[0, j] == 0.0 and router.joined_late_[j] == 1.0
        loop.close()
    finally:
        stand.stop()
        os.environ.pop(KEY_ENV, None)
