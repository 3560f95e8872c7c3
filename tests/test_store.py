"""The decision/feedback store on SQLite and on a real PostgreSQL server started here."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid

import numpy as np
import pytest
from pg_server import postgres_server

from trouter.store import Decision, DecisionLog, Feedback, Store, StoreError, StoreUnavailable
from trouter.store.backends import migrations


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg").url


@pytest.fixture
def store(url):
    s = Store.open(url, ttl_s=3600)
    yield s
    s.close()


def decision(rid: str | None = None, now: float | None = None, **kw) -> Decision:
    now = time.time() if now is None else now
    fields = {
        "request_id": rid or uuid.uuid4().hex,
        "created_at": now,
        "expires_at": now + 3600,
        "router": "online",
        "model": "m-a",
        "cell": 1,
        "features": {"prior_performance": [0.6, 0.4], "prior_cost": [0.9, 0.1]},
        "utilities": {"m-a": 0.5, "m-b": 0.3},
        "weights": [1.0, -0.2],
    }
    return Decision(**{**fields, **kw})


def test_migrations_apply_once_and_record_their_version(url) -> None:
    first, second = Store.open(url), Store.open(url)
    rows = first.backend.fetchall("SELECT version, name FROM schema_migrations")
    assert rows == [(v, name) for v, name, _ in migrations(first.backend.dialect)]
    assert rows[0] == (1, "0001_init.sql")
    first.close()
    second.close()


def test_decisions_round_trip_and_keep_the_first_row_of_an_id(store) -> None:
    d = decision(prompt_tokens=12, cost_usd=0.002, explored=True, propensity=0.25)
    store.write_decisions([d])
    store.write_decisions([decision(d.request_id, model="m-b")])
    back = store.decision(d.request_id)
    assert back == d
    assert store.decision("nope") is None


def test_non_finite_numbers_are_stored_as_standard_json_and_read_back_as_nan(store) -> None:
    nan = float("nan")
    d = decision(features={"prior_performance": [0.6, nan], "prior_cost": [nan, 0.1],
                           "models": ["m-a", "m-b"]},
                 utilities={"m-a": 0.5, "m-b": float("-inf")})  # fmt: skip
    store.write_decisions([d])

    def strict(token: str) -> float:
        raise AssertionError(f"{token} is not JSON")

    text = store.backend.fetchall(
        "SELECT features, utilities FROM decisions WHERE request_id = ?", (d.request_id,)
    )[0]
    for column in text:
        json.loads(column, parse_constant=strict)
    back = store.decision(d.request_id)
    assert back.features["prior_performance"][0] == 0.6
    assert math.isnan(back.features["prior_performance"][1])
    assert math.isnan(back.features["prior_cost"][0]) and back.features["models"] == ["m-a", "m-b"]
    assert back.utilities["m-a"] == 0.5 and math.isnan(back.utilities["m-b"])
    store.add_feedback(Feedback(d.request_id, 1.0))
    event = next(e for e in store.served_events() if e["request_id"] == d.request_id)
    assert event["prior_performance"][0] == 0.6 and math.isnan(event["prior_performance"][1])


def test_rows_are_written_compactly_and_read_back_whole(store) -> None:
    prior = np.array([0.27780196, 0.31753477], dtype=np.float32)  # as the online router logs
    pooled = decision(pool="m-a,m-b", features={"models": ["m-a", "m-b"], "prior_performance":
                      prior, "prior_cost": [0.125, math.nan], "cell": 1},
                      utilities={"m-b": 0.3175347743963908, "m-a": 0.2778019599692245})  # fmt: skip
    renamed = decision(pool="m-a,m-b", features={"models": ["r-a", "r-b"],
                       "prior_performance": [0.6, 0.4], "prior_cost": [0.9, 0.1]},
                       utilities={"m-a": 0.5, "other": 0.1})  # fmt: skip
    limited = decision(pool="m-a,m-b", utilities={"m-b": 0.25})  # m-a excluded by a limit
    store.write_decisions([pooled, renamed, limited])
    sql = "SELECT features, utilities FROM decisions WHERE request_id = ?"
    feats, utilities = store.backend.fetchall(sql, (pooled.request_id,))[0]
    assert "models" not in json.loads(feats)  # the pool's names: not repeated
    assert json.loads(feats)["prior_performance"] == [0.27780196, 0.31753477]  # 8 digits
    assert json.loads(utilities) == [0.2778019599692245, 0.3175347743963908]  # pool order
    back = store.decision(pooled.request_id)
    assert back.features["models"] == ["m-a", "m-b"] and back.features["cell"] == 1
    assert np.array_equal(np.float32(back.features["prior_performance"]), prior)
    assert back.utilities == pooled.utilities
    assert math.isnan(back.features["prior_cost"][1])
    kept = store.decision(renamed.request_id)  # names that are not the pool's stay
    assert kept.features["models"] == ["r-a", "r-b"] and kept.utilities == renamed.utilities
    assert store.decision(limited.request_id).utilities == {"m-b": 0.25}  # m-a stays absent


def test_numpy_features_are_written_as_lists_contiguous_or_not(store) -> None:
    matrix = np.array([[0.6, 0.9], [0.4, 0.1]])
    d = decision(features={"prior_performance": matrix[0], "prior_cost": matrix[:, 1]})
    store.write_decisions([d])
    back = store.decision(d.request_id)
    assert back.features == {"prior_performance": [0.6, 0.9], "prior_cost": [0.9, 0.1]}


def test_rows_written_with_nan_tokens_by_earlier_versions_are_still_read(store) -> None:
    d = decision()
    store.write_decisions([d])
    store.backend.execute(
        "UPDATE decisions SET features = ? WHERE request_id = ?",
        ('{"prior_performance": [NaN, 0.4], "prior_cost": [0.9, 0.1]}', d.request_id),
    )
    back = store.decision(d.request_id)
    assert math.isnan(back.features["prior_performance"][0])
    assert back.features["prior_cost"] == [0.9, 0.1]


def test_a_batch_is_written_in_statements_within_the_parameter_bound(store, monkeypatch) -> None:
    monkeypatch.setattr(store.backend, "max_params", 3 * 24 + 5)  # SQLite: 3 rows a statement
    batch = [decision(prompt_tokens=i) for i in range(8)]
    twin = decision(batch[2].request_id, model="m-b")  # the same id twice in one statement
    store.write_decisions([batch[0], batch[2], twin, batch[1], *batch[3:]])  # 3 statements
    for d in batch:
        assert store.decision(d.request_id) == d  # each once, the first row of an id kept


def test_feedback_is_idempotent_and_knows_unknown_and_expired_ids(store) -> None:
    live, old = decision(), decision(now=time.time() - 7200)
    store.write_decisions([live, old])
    assert store.add_feedback(Feedback(live.request_id, 1.0)) == "accepted"
    assert store.add_feedback(Feedback(live.request_id, 0.0)) == "duplicate"  # same source
    assert store.add_feedback(Feedback(live.request_id, 0.5, "judge")) == "accepted"
    assert store.add_feedback(Feedback(live.request_id, 0.5, key="k1")) == "accepted"
    assert store.add_feedback(Feedback(live.request_id, 0.5, key="k1")) == "duplicate"
    assert store.add_feedback(Feedback("missing", 1.0)) == "unknown"
    assert store.add_feedback(Feedback(old.request_id, 1.0)) == "expired"
    mine = [e for e in store.served_events() if e["request_id"] == live.request_id]
    assert sorted(e["score"] for e in mine) == [0.5, 0.5, 1.0]
    assert {e["model"] for e in mine} == {"m-a"}
    assert mine[0]["prior_performance"] == [0.6, 0.4] and mine[0]["cell"] == 1


def test_purge_blanks_then_deletes_and_late_feedback_is_expired(store) -> None:
    now = time.time()
    d = decision(now=now, query_text="secret", query_hash="h")
    store.write_decisions([d])
    store.add_feedback(Feedback(d.request_id, 1.0), now=now)
    store.purge(now + 3601)  # past expiry: text and features blanked, row kept
    kept = store.decision(d.request_id)
    assert kept is not None and kept.query_text is None and kept.features is None
    assert store.add_feedback(Feedback(d.request_id, 1.0, key="late"), now=now + 3601) == "expired"
    assert not [e for e in store.served_events() if e["request_id"] == d.request_id]
    store.purge(now + 2 * 3600 + 2)  # one TTL later: gone
    assert store.decision(d.request_id) is None


def test_label_rows_are_read_back_since_a_time(store) -> None:
    now = time.time() + 10_000  # after any row an earlier test left on the shared server
    tag = uuid.uuid4().hex
    store.add_label(f"{tag}-old", {"m-a": 0.0}, request_id="r-old", now=now - 60)
    store.add_label(f"{tag}-1", {"m-a": 1.0, "m-b": 0.5}, request_id="r-1", now=now)
    store.add_label(f"{tag}-2", {"m-b": 0.0}, now=now + 1)
    assert store.label_rows(now) == [
        ("r-1", {"m-a": 1.0, "m-b": 0.5}, pytest.approx(now)),
        (None, {"m-b": 0.0}, pytest.approx(now + 1)),
    ]


def test_background_spend_is_a_ledger_per_kind_since_a_time(store) -> None:
    assert store.add_spend("r1:label", "label", 0.03, now=100.0)
    assert store.add_spend("r1:judge", "judge", 0.002, now=150.0)
    assert store.add_spend("r2:label", "label", 0.05, now=200.0)
    assert not store.add_spend("r2:label", "label", 0.05, now=210.0)  # recorded once
    assert store.background_spend() == pytest.approx({"label": 0.08, "judge": 0.002})
    assert store.background_spend(since=155.0) == pytest.approx({"label": 0.05})
    assert store.purge(now=store.ttl_s + 160.0)["background_spend"] == 2


def test_the_log_writes_in_batches_off_the_calling_thread(store) -> None:
    seen: list[int] = []
    log = DecisionLog(store, batch=50, interval_s=0.05, on_written=seen.append)
    ids = [uuid.uuid4().hex for _ in range(120)]
    for rid in ids:
        assert log.submit(decision(rid), "what is 2+2?")
    assert log.wait_written(ids[-1], 10)
    log.close()
    assert sum(seen) == 120 and max(seen) <= 50 and log.dropped == 0
    row = store.decision(ids[0])
    assert row is not None and row.query_text is None and len(row.query_hash) == 64


def test_the_writer_gathers_a_batch_and_a_waiting_reader_cuts_its_linger_short(store) -> None:
    seen: list[int] = []
    log = DecisionLog(store, batch=500, interval_s=0.05, linger_s=3.0, on_written=seen.append)
    first = [uuid.uuid4().hex for _ in range(40)]
    for rid in first:  # queued while the writer lingers after the first: one batch
        log.submit(decision(rid), "q")
    times = []
    for rid in (first[-1], None):
        if rid is None:  # a record queued while the writer lingers, then waited for
            rid = uuid.uuid4().hex
            log.submit(decision(rid), "q")
            time.sleep(0.05)
        started = time.monotonic()
        assert log.wait_written(rid, 10)
        times.append(time.monotonic() - started)
    log.close()
    assert seen == [40, 1] and log.dropped == 0
    assert max(times) < 1.5, f"waits of {times} s: the 3 s linger ran its course"


def test_log_text_is_stored_only_when_asked(store) -> None:
    log = DecisionLog(store, interval_s=0.05, log_text=True)
    d = decision()
    log.submit(d, "keep me")
    log.close()
    assert store.decision(d.request_id).query_text == "keep me"


class SlowStore:
    """A store whose writes hang until released (a database that stopped answering)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.rows: list[Decision] = []

    def write_decisions(self, decisions) -> None:
        self.release.wait(10)
        self.rows += decisions


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    slow = SlowStore()
    log = DecisionLog(slow, max_queue=10, batch=5, interval_s=0.01)  # type: ignore[arg-type]
    started = time.perf_counter()
    accepted = sum(log.submit(decision(), "q") for _ in range(100))
    elapsed = time.perf_counter() - started
    slow.release.set()
    log.close()
    assert elapsed < 0.5  # 100 submits against a hung store
    assert accepted + log.dropped == 100 and log.dropped >= 80
    assert len(slow.rows) == accepted


def test_failed_writes_are_counted_and_the_writer_recovers(store) -> None:
    real = store.write_decisions
    down = threading.Event()
    down.set()

    def flaky(batch):
        if down.is_set():
            raise StoreUnavailable("database is down")
        real(batch)

    store.write_decisions = flaky  # type: ignore[method-assign]
    log = DecisionLog(store, batch=10, interval_s=0.02)
    lost = [decision() for _ in range(10)]
    for d in lost:
        log.submit(d, "q")
    assert log.wait_written(lost[-1].request_id, 5)
    down.clear()
    later = decision()
    log.submit(later, "q")
    assert log.wait_written(later.request_id, 10)
    log.close()
    assert log.dropped == 10 and log.failures >= 1
    assert store.decision(later.request_id) is not None


def test_postgres_stopped_under_writes_loses_records_not_calls(pg) -> None:
    store = Store.open(pg.url)
    store.backend.timeout_s = 1.0
    log = DecisionLog(store, batch=20, interval_s=0.02)
    try:
        before = [decision() for _ in range(20)]
        for d in before:
            log.submit(d, "q")
        assert log.wait_written(before[-1].request_id, 10) and log.dropped == 0
        pg.stop()
        during = [decision() for _ in range(40)]
        started = time.perf_counter()
        assert all(log.submit(d, "q") for d in during)
        assert time.perf_counter() - started < 0.2
        assert log.wait_written(during[-1].request_id, 30)
        assert log.dropped > 0
        pg.start()
        after = decision()
        deadline = time.time() + 30
        while not _logged(store, after.request_id) and time.time() < deadline:
            log.submit(decision(), "q")
            log.submit(after, "q")
            log.wait_written(after.request_id, 5)
            time.sleep(0.2)
        assert _logged(store, after.request_id)
        assert _logged(store, before[0].request_id)
    finally:
        log.close()
        store.close()


def _logged(store: Store, request_id: str) -> bool:
    try:
        return store.decision(request_id) is not None
    except StoreUnavailable:
        return False


@pytest.mark.parametrize(
    "bad", ["mysql://x", "sqlite:///", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"]
)
def test_bad_store_urls_are_one_clear_error(bad: str) -> None:
    with pytest.raises(StoreError):
        Store.open(bad)


def test_the_log_applies_retention_on_start(store) -> None:
    now = time.time()
    old = decision(now=now - 3 * 3600)  # expired two hours ago, one TTL past expiry
    store.write_decisions([old])
    log = DecisionLog(store, interval_s=0.02)
    fresh = decision()
    log.submit(fresh, "q")
    log.wait_written(fresh.request_id, 5)
    log.close()
    assert store.decision(old.request_id) is None
    assert store.decision(fresh.request_id) is not None


def test_rows_without_an_online_prior_or_unreadable_are_skipped_not_fatal(store, caplog) -> None:
    logged = decision(features={"performance": {"m-a": 0.5}, "cost": {"m-a": 0.1}})  # kNN
    broken, fine = decision(), decision()
    store.write_decisions([logged, broken, fine])
    store.backend.execute(
        "UPDATE decisions SET features = ? WHERE request_id = ?", ("{not json", broken.request_id)
    )
    for d in (logged, broken, fine):
        store.add_feedback(Feedback(d.request_id, 1.0))
        store.add_label(f"l-{d.request_id}", {"m-a": 1.0, "m-b": 0.0}, request_id=d.request_id)
    with caplog.at_level("WARNING", logger="trouter.store"):
        served = {e["request_id"]: e for e in store.served_events()}
        labels = store.label_events()
    assert "prior_performance" in served[fine.request_id]
    assert "prior_performance" not in served[logged.request_id]  # the learner skips it
    assert "prior_performance" not in served[broken.request_id]
    assert [e["id"] for e in labels if fine.request_id in e["id"]] == [f"label:l-{fine.request_id}"]
    assert not [e for e in labels if logged.request_id in e["id"] or broken.request_id in e["id"]]
    assert any(broken.request_id in r.getMessage() for r in caplog.records)
