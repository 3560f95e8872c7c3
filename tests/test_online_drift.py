"""Level shifts of the online router (a model's quality or price changes), on real RouterBench
rows (the committed fixture cut)."""

from __future__ import annotations

import numpy as np
import pytest

from trouter.data.suites import load_suite
from trouter.evaluation.folds import Fold
from trouter.evaluation.online import OnlineConfig, stream_folds
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import Router, make_router
from trouter.routers.online import OnlineRouter
from trouter.routers.online_anchor import snapshot
from trouter.routers.online_drift import change_point

BALANCED = SCENARIOS["balanced"]


@pytest.fixture(scope="module")
def arc_fold() -> Fold:
    """The ARC-Challenge rows streamed; the base knows only MBPP and WinoGrande."""
    (fold,) = stream_folds(load_suite("routerbench"), 0, OnlineConfig(tasks=("arc-challenge",)))
    return fold


def _router(fold: Fold, **params) -> OnlineRouter:
    base = make_router("best-single").fit(fold.train, fold.validation)
    return OnlineRouter.around(base, fold.train, **params)


def _training_choice(fold: Fold, perf_shift=None, cost_factor=None) -> int:
    """Best-single of the training rows, with one model's level moved."""
    perf = np.nanmean(fold.train.performance, axis=0)
    cost = np.nanmean(fold.train.normalised_cost, axis=0)
    if perf_shift is not None:
        perf[perf_shift[0]] += perf_shift[1]
    if cost_factor is not None:
        cost[cost_factor[0]] *= cost_factor[1]
    return int(np.argmax(BALANCED.utility(perf, cost)))


def _served(fold: Fold, model: int, start: int, passes: int, drop: float = 0.0) -> list[dict]:
    """Served events of ``model`` over the stream's rows, ``passes`` times, from time
    ``start``, its scores ``drop`` lower (clipped at 0)."""
    stream, names = fold.test, fold.test.model_names
    n = len(stream)
    return [
        {
            "id": f"s{start + i}",
            "kind": "served",
            "t": start + i,
            "query": stream.texts[i % n],
            "model": names[model],
            "score": max(float(stream.performance[i % n, model]) - drop, 0.0),
            "cost": float(stream.normalised_cost[i % n, model]),
        }
        for i in range(passes * n)
    ]


def _labels(fold: Fold, times: range, cheaper: int | None = None) -> list[dict]:
    """Background labels of the stream's rows at ``times``; ``cheaper``'s price a tenth."""
    stream, names = fold.test, fold.test.model_names
    events = []
    for t in times:
        row = t % len(stream)
        costs = stream.normalised_cost[row].copy()
        if cheaper is not None:
            costs[cheaper] *= 0.1
        events.append(
            {
                "id": f"l{t}",
                "kind": "label",
                "t": t,
                "query": stream.texts[row],
                "scores": dict(zip(names, stream.performance[row].tolist(), strict=True)),
                "costs": dict(zip(names, costs.tolist(), strict=True)),
            }
        )
    return events


def test_a_price_cut_seen_on_a_few_labels_re_ranks_the_anchor(arc_fold):
    names = arc_fold.test.model_names
    gpt4 = names.index("gpt-4-1106-preview")
    before = _training_choice(arc_fold)
    after = _training_choice(arc_fold, cost_factor=(gpt4, 0.1))
    assert before != gpt4 and after == gpt4  # the cut matters on these rows
    router = _router(arc_fold)
    frozen = _router(arc_fold, drift_z=None)
    for r in (router, frozen):
        r.partial_fit(_labels(arc_fold, range(0, 40)))
        assert r.anchor_choice(BALANCED) == before
        r.partial_fit(_labels(arc_fold, range(40, 50), cheaper=gpt4))
    assert router.shifts.cost[gpt4] == pytest.approx(0.1, rel=0.2)
    assert router.shifts.cost_since[gpt4] == pytest.approx(40, abs=1)
    assert np.isinf(np.delete(router.shifts.cost_since, gpt4)).all()  # no other model moved
    assert router.anchor_choice(BALANCED) == gpt4
    assert frozen.anchor_choice(BALANCED) == before
    # labels taken before the cut read at the new price; those after it as they are
    labels = snapshot(router)
    old = labels.time < 40
    np.testing.assert_allclose(
        labels.cost[old, gpt4], router.label_cost_[old, gpt4] * router.shifts.cost[gpt4]
    )
    np.testing.assert_array_equal(labels.cost[~old, gpt4], router.label_cost_[~old, gpt4])


def test_a_score_drop_in_served_feedback_moves_the_anchor_and_stays_found(arc_fold):
    router = _router(arc_fold)
    anchor = router.anchor_choice(BALANCED)
    router.partial_fit(_served(arc_fold, anchor, 0, passes=2))
    assert not router.shifts.any  # the model's own level on this traffic: no change
    start = 2 * len(arc_fold.test)
    router.partial_fit(_served(arc_fold, anchor, start, passes=2, drop=0.2))
    shift = router.shifts.perf[anchor]
    assert -0.25 < shift < -0.1
    assert abs(router.shifts.perf_since[anchor] - start) < 60
    moved = router.anchor_choice(BALANCED)
    assert moved == _training_choice(arc_fold, perf_shift=(anchor, shift)) != anchor
    # a few labels afterwards do not undo it (the change is latched)
    router.partial_fit(_labels(arc_fold, range(start * 2, start * 2 + 20)))
    assert router.anchor_choice(BALANCED) == moved


def test_a_stationary_stream_shows_no_shift(arc_fold):
    for seed in range(3):
        router = _router(arc_fold)
        anchor = router.anchor_choice(BALANCED)
        events = _served(arc_fold, anchor, 0, passes=3) + _labels(arc_fold, range(0, 540, 9))
        order = np.random.default_rng(seed).permutation(len(events))
        for start in range(0, len(order), 25):
            router.partial_fit([events[i] for i in order[start : start + 25]])
        assert not router.shifts.any, seed


def test_shifts_survive_save_and_load(arc_fold, tmp_path):
    gpt4 = arc_fold.test.model_names.index("gpt-4-1106-preview")
    router = _router(arc_fold)
    router.partial_fit(_labels(arc_fold, range(0, 40)) + _labels(arc_fold, range(40, 50), gpt4))
    router.save(tmp_path / "online")
    loaded = Router.load(tmp_path / "online")
    for field in ("perf", "perf_since", "cost", "cost_since"):
        np.testing.assert_array_equal(getattr(loaded.shifts, field), getattr(router.shifts, field))
    assert loaded.anchor_choice(BALANCED) == router.anchor_choice(BALANCED) == gpt4


def test_change_point_finds_the_split_and_ignores_too_short_segments():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.0, 0.3, 200), rng.normal(-0.3, 0.3, 100)])
    times = np.arange(300.0)
    z, shift, since = change_point(times, values, np.zeros(3), (30, 30, 0.01))
    assert z > 5 and shift == pytest.approx(-0.3, abs=0.08) and abs(since - 200) <= 10
    assert change_point(times[:40], values[:40], np.zeros(3), (30, 30, 0.01))[2] == np.inf


def test_a_price_cut_of_the_served_model_is_found_in_its_served_costs(arc_fold):
    router = _router(arc_fold)
    anchor = router.anchor_choice(BALANCED)
    router.partial_fit(_served(arc_fold, anchor, 0, passes=1))
    assert not router.shifts.any
    cheaper = _served(arc_fold, anchor, len(arc_fold.test), passes=1)
    router.partial_fit([{**e, "cost": e["cost"] * 0.1} for e in cheaper[:60]])
    assert router.shifts.cost[anchor] == pytest.approx(0.1, rel=0.2)
    assert router.shifts.cost_since[anchor] == pytest.approx(len(arc_fold.test), abs=2)
    assert np.isinf(router.shifts.perf_since).all()  # the scores did not change
    # still known once the answers from before the cut have left the window
    later = _served(arc_fold, anchor, 2 * len(arc_fold.test), passes=12)
    for start in range(0, len(later), 60):
        router.partial_fit([{**e, "cost": e["cost"] * 0.1} for e in later[start : start + 60]])
    assert router._logs["served"][anchor].rows[0, 0] > len(arc_fold.test)  # window: all after
    assert router.shifts.cost[anchor] == pytest.approx(0.1, rel=0.2)
