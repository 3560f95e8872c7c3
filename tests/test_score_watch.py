"""The served-score watch: a model that got worse shows a drop and a warning; a model that
is merely routed harder queries does not."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from trouter.serving.score_watch import MIN_RECENT, ScoreWatch

MODELS = ["cheap", "strong"]


def _events(rng, n: int, predicted: np.ndarray, actual: np.ndarray) -> list[dict]:
    """Served events of ``strong`` with 0/1 scores drawn at ``actual`` per query, each
    carrying the router's prior ``predicted`` for it (and 0.3 for ``cheap``)."""
    return [
        {"model": "strong", "score": float(rng.random() < actual[i]),
         "prior_performance": [0.3, float(predicted[i])]}  # fmt: skip
        for i in range(n)
    ]


def _gauge(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels)


def test_a_model_that_got_worse_shows_a_drop_and_is_warned_of_once(caplog) -> None:
    rng = np.random.default_rng(0)
    registry = CollectorRegistry()
    watch = ScoreWatch(registry)
    p = rng.uniform(0.5, 0.95, 3000)
    with caplog.at_level(logging.WARNING, logger="trouter.serving"):
        watch.update(_events(rng, 2000, p[:2000], p[:2000]), MODELS)
        assert abs(watch.drop("strong")) < 0.05 and not caplog.records
        # the provider changes the model: every query now scores 0.2 lower than predicted
        drops = []
        for start in range(2000, 3000, 100):
            window = slice(start, start + 100)
            watch.update(_events(rng, 100, p[window], p[window] - 0.2), MODELS)
            drops.append(watch.drop("strong"))
            if start == 2200:  # 300 queries after the change
                assert drops[-1] > 0.1
                gauge = _gauge(registry, "trouter_served_score_drop", model="strong")
                assert gauge == pytest.approx(drops[-1])
                recent = _gauge(registry, "trouter_served_score", model="strong", window="recent")
                long_run = _gauge(registry, "trouter_served_score", model="strong", window="long")
                assert recent < long_run - 0.1
                assert len(caplog.records) == 1 and "fallen" in caplog.records[0].getMessage()
    # the long-run mean absorbs a lasting change: the drop fades, warned of once only
    assert drops[-1] < max(drops) and len(caplog.records) == 1


def test_harder_queries_routed_to_a_model_are_not_a_drop(caplog) -> None:
    rng = np.random.default_rng(1)
    watch = ScoreWatch(CollectorRegistry())
    easy, hard = rng.uniform(0.8, 0.95, 2000), rng.uniform(0.2, 0.4, 1000)
    with caplog.at_level(logging.WARNING, logger="trouter.serving"):
        watch.update(_events(rng, 2000, easy, easy), MODELS)
        # the router now sends it hard queries, and predicts them as hard: no change in it
        watch.update(_events(rng, 1000, hard, hard), MODELS)
    state = watch.models["strong"]
    assert state.score["recent"].mean < state.score["long"].mean - 0.3  # raw scores fell
    assert abs(watch.drop("strong")) < 0.05 and not caplog.records


def test_too_few_events_report_no_drop_and_bad_events_are_skipped() -> None:
    watch = ScoreWatch(CollectorRegistry())
    rng = np.random.default_rng(2)
    p = np.full(MIN_RECENT - 1, 0.9)
    watch.update(_events(rng, MIN_RECENT - 1, p, p - 0.5), MODELS)
    assert watch.drop("strong") == 0.0
    watch.update([{"model": "unknown", "score": 1.0, "prior_performance": [0.1, 0.2]},
                  {"model": "strong", "score": float("nan"), "prior_performance": [0.1, 0.2]},
                  {"model": "strong", "score": 1.0}], MODELS)  # fmt: skip
    assert set(watch.models) == {"strong"}
    assert watch.models["strong"].events == MIN_RECENT  # the one without a prior counts
    with pytest.raises(ValueError, match="half-lives"):
        ScoreWatch(CollectorRegistry(), recent=500, long=100)
