"""The online router's anchor (best-single on this traffic) and its out-of-sample test of
the base, on real RouterBench rows (the committed fixture cut)."""

from __future__ import annotations

import numpy as np
import pytest

from trouter.evaluation.folds import Fold
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import make_router
from trouter.routers.online import OnlineRouter
from trouter.store import Store
from trouter.store.records import Decision

BALANCED = SCENARIOS["balanced"]


def _router(fold: Fold, base: str = "best-single") -> OnlineRouter:
    fitted = make_router(base).fit(fold.train, fold.validation)
    return OnlineRouter.around(fitted, fold.train)


def _label(fold: Fold, t: int, scores=None, proposal: str | None = None) -> dict:
    stream, names = fold.test, fold.test.model_names
    event = {
        "id": f"l{t}",
        "kind": "label",
        "t": t,
        "query": stream.texts[t],
        "scores": scores or dict(zip(names, stream.performance[t].tolist(), strict=True)),
        "costs": dict(zip(names, stream.normalised_cost[t].tolist(), strict=True)),
    }
    if proposal is not None:
        event["proposal_model"] = proposal
    return event


def test_the_anchor_moves_to_the_best_model_of_the_labelled_traffic(mbpp_fold):
    router = _router(mbpp_fold)
    trained = router.best_single(BALANCED)
    assert router.anchor_choice(BALANCED) == trained  # no labels: the training rows' choice
    # the tests look at 8, 16, 32, 64 and 128 labels; on these rows (in file order) the
    # look at 128 is the one that moves it
    router.partial_fit([_label(mbpp_fold, t) for t in range(128)])
    stream = mbpp_fold.test
    utility = BALANCED.utility(stream.performance[:128], stream.normalised_cost[:128])
    labels_best = int(np.nanargmax(np.nanmean(utility, axis=0)))
    assert labels_best != trained  # mbpp's best model is not the other tasks' one
    assert router.anchor_choice(BALANCED) == labels_best
    # and serving follows it: with no base earned, every query gets the new anchor
    decisions = router.decide(list(stream.texts[100:110]), BALANCED)
    assert {d["model"] for d in decisions} == {stream.model_names[labels_best]}


def test_labels_that_favour_no_model_leave_the_anchor_where_it_was(mbpp_fold):
    """Scores drawn at random for every model (the same chance for all) and one price: the
    best of the rivals is ahead by chance alone, and the corrected test does not move."""
    router = _router(mbpp_fold)
    trained = router.best_single(BALANCED)
    names = mbpp_fold.test.model_names
    rng = np.random.default_rng(0)
    events = []
    for t in range(60):
        coin = rng.integers(0, 2, len(names)).tolist()
        event = _label(mbpp_fold, t, dict(zip(names, coin, strict=True)))
        event["costs"] = dict.fromkeys(names, 0.1)
        events.append(event)
    router.partial_fit(events)
    assert router.anchor_choice(BALANCED) == trained


def test_the_base_is_judged_on_the_proposals_recorded_before_its_labels(mbpp_fold):
    """The same labels: recorded proposals equal to the anchor show no gain at all, recorded
    proposals of each label's best model show a large one; the router's current proposal
    (which has learned from those very labels) is never substituted for a recorded one."""
    stream, names = mbpp_fold.test, mbpp_fold.test.model_names
    utility = BALANCED.utility(stream.performance, stream.normalised_cost)
    # the anchor the 40 labels settle on (it reads scores only, never proposals)
    plain = _router(mbpp_fold).partial_fit([_label(mbpp_fold, t) for t in range(40)])
    anchor = names[plain.anchor_choice(BALANCED)]
    timid = _router(mbpp_fold).partial_fit([_label(mbpp_fold, t, proposal=anchor)
                                            for t in range(40)])  # fmt: skip
    mean, _, total = timid.base_gain(BALANCED)
    assert total == 40 and mean == 0.0
    assert not timid.base_earned(BALANCED)
    best_each = [names[int(np.nanargmax(utility[t]))] for t in range(40)]
    sharp = _router(mbpp_fold).partial_fit(
        [_label(mbpp_fold, t, proposal=best_each[t]) for t in range(40)]
    )
    sharp_anchor = sharp.anchor_choice(BALANCED)
    expected = np.mean([np.nanmax(utility[t]) - utility[t, sharp_anchor] for t in range(40)])
    assert sharp.base_gain(BALANCED)[0] == pytest.approx(expected)
    assert sharp.base_earned(BALANCED)


def test_a_label_keeps_its_proposal_through_the_store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    store.add_label("l1", {"a": 1.0, "b": 0.0}, request_id="r1", proposal="b")
    store.add_label("l2", {"a": 1.0, "b": 0.0}, request_id="r2")
    # labels are placed by their decision's features: log the decisions they belong to
    for rid in ("r1", "r2"):
        store.write_decisions(
            [
                Decision(
                    request_id=rid,
                    created_at=0.0,
                    expires_at=1e12,
                    router="online",
                    model="a",
                    propensity=1.0,
                    features={"prior_performance": [0.5, 0.5], "prior_cost": [0.1, 0.2]},
                )  # fmt: skip
            ]
        )
    events = {e["id"]: e for e in store.label_events()}
    assert events["label:l1"]["proposal_model"] == "b"
    assert events["label:l2"]["proposal_model"] is None


def test_a_rival_with_a_few_lucky_labels_does_not_hide_one_shown_ahead(mbpp_fold):
    """One rival is shown ahead of the anchor on 40 paired labels; another, on 3 labels only,
    has the best mean of all (perfect scores, free). The anchor moves to the one shown."""
    names = mbpp_fold.test.model_names
    router = _router(mbpp_fold)
    trained = names[router.best_single(BALANCED)]
    shown, lucky = "gpt-3.5-turbo-1106", "claude-instant-v1"
    assert trained not in (shown, lucky)
    events = []
    for t in range(40):
        scores = {trained: 0.0, shown: 1.0}
        costs = {trained: 0.1, shown: 0.1}
        if t < 3:
            scores[lucky], costs[lucky] = 1.0, 0.0
        event = _label(mbpp_fold, t, scores)
        event["costs"] = costs
        events.append(event)
    router.partial_fit(events)
    assert names[router.anchor_choice(BALANCED)] == shown


def test_doubling_looks_move_the_anchor_only_at_their_label_counts(mbpp_fold):
    """With looks="doubling" the anchor is decided at 8, 16, 32, ... labels, each look at a
    smaller error rate, and stands in between; with every look it may move at any label."""
    from trouter.routers.online_tests import look

    params = {"min_evidence": 8.0, "confidence": 0.95, "looks": "doubling"}
    assert look(5, params) == (5, params)
    n, at = look(20, params)
    assert n == 16 and at["confidence"] == pytest.approx(1 - 0.05 / 4)
    assert look(20, {**params, "looks": "every"}) == (20, {**params, "looks": "every"})
    later = {**params, "first_look": 12.0}  # the schedule's start, apart from min_evidence
    assert look(11, later) == (11, later) and look(30, later)[0] == 24
    fitted = make_router("best-single").fit(mbpp_fold.train, mbpp_fold.validation)
    moves = {}
    for looks in ("every", "doubling"):
        router = OnlineRouter.around(fitted, mbpp_fold.train, looks=looks)
        anchors = []
        for t in range(150):
            router.partial_fit([_label(mbpp_fold, t)])
            anchors.append(router.anchor_choice(BALANCED))
        moves[looks] = [t + 1 for t in range(1, 150) if anchors[t] != anchors[t - 1]]
    # the fixture's mbpp rows in file order: re-tested after every label, the anchor moves
    # back and forth; looking at doubling counts it moves once, later
    assert len(moves["every"]) > 2
    assert moves["doubling"] and set(moves["doubling"]) <= {8, 16, 32, 64, 128}
    assert len(moves["doubling"]) < len(moves["every"])
    assert moves["every"][0] <= moves["doubling"][0]


def test_a_planned_label_count_gets_the_last_look_and_the_error_rate_left(mbpp_fold):
    """With a fixed batch of labels (``label_plan``) the doubling looks before the plan keep
    their error rates, the look at the plan spends the rest (the whole stays alpha), and
    labels past the plan change no test; a newcomer's pairs and a rate keep doubling."""
    from trouter.routers.online_tests import look

    params = {"min_evidence": 8.0, "confidence": 0.9, "looks": "doubling", "label_plan": 25.0}
    spent = []
    for n in (8, 16, 25):
        at, used = look(n, params)
        assert at == n
        spent.append(1 - used["confidence"])
    assert spent == pytest.approx([0.05, 0.025, 0.025]) and sum(spent) == pytest.approx(0.1)
    assert look(24, params)[0] == 16 and look(60, params)[0] == 25  # stands after the plan
    assert 1 - look(100, {**params, "label_plan": 100.0})[1]["confidence"] == pytest.approx(
        0.1 / 16
    )
    assert look(60, {**params, "label_plan": None})[0] == 32
    # on the fixture's mbpp rows in file order the doubling looks first move the anchor at
    # 32 labels; planned at 25, the last look moves it at 25 and not before
    fitted = make_router("best-single").fit(mbpp_fold.train, mbpp_fold.validation)
    moved = {}
    for plan in (None, 25):
        router = OnlineRouter.around(fitted, mbpp_fold.train, label_plan=plan)
        trained = router.anchor_choice(BALANCED)
        for t in range(40):
            router.partial_fit([_label(mbpp_fold, t)])
            if router.anchor_choice(BALANCED) != trained:
                moved[plan] = t + 1
                break
    assert moved == {None: 32, 25: 25}


@pytest.mark.parametrize("field", ["label_plan", "half_life", "drift_z"])
@pytest.mark.parametrize("value", [float("nan"), 0.0, -5.0])
def test_counts_and_half_lives_that_are_not_positive_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        OnlineRouter(base="best-single", **{field: value})


def _won_then_lost(fold: Fold, keep: bool, rivals: int, read) -> list:
    """32 paired labels: a rival (of ``rivals``, in turn; each label also records it as the
    proposal) wins the first 8 against the training rows' best-single and loses the rest,
    at one price. ``read(router)`` after 8, 16, 31 and 32 labels."""
    names = fold.test.model_names
    fitted = make_router("best-single").fit(fold.train, fold.validation)
    router = OnlineRouter.around(fitted, fold.train, keep_moves=keep)
    trained = names[router.best_single(BALANCED)]
    others = [name for name in names if name != trained][:rivals]
    seen = []
    for t in range(32):
        rival, won = others[t % rivals], t < 8
        event = _label(fold, t, {trained: float(not won), rival: float(won)}, proposal=rival)
        event["costs"] = {trained: 0.1, rival: 0.1}
        router.partial_fit([event])
        seen.append(read(router))
    return [trained, others[0]] + [seen[n - 1] for n in (8, 16, 31, 32)]


def test_with_keep_moves_a_move_stands_until_the_labels_rule_it_out(mbpp_fold):
    """A rival wins the first 8 paired labels (the look at 8 moves the anchor), then loses
    8: at 16 nothing is shown ahead, and deciding afresh goes back, while a kept move stands
    (its gain, 0, is still possibly above the margin); 16 more losses rule it out by 32."""
    from trouter.routers.online_tests import look_counts

    params = {"min_evidence": 8.0, "looks": "doubling", "label_plan": None}
    assert look_counts(7, params) == [] and look_counts(40, params) == [8, 16, 32]
    assert look_counts(40, {**params, "label_plan": 25.0}) == [8, 16, 25]
    names = mbpp_fold.test.model_names

    def anchor(router):
        return names[router.anchor_choice(BALANCED)]

    trained, rival, *afresh = _won_then_lost(mbpp_fold, False, 1, anchor)
    assert afresh == [rival, trained, trained, trained]
    assert _won_then_lost(mbpp_fold, True, 1, anchor)[2:] == [rival, rival, rival, trained]


def test_with_keep_moves_an_earned_base_stands_until_the_labels_rule_it_out(mbpp_fold):
    """The recorded proposals (three rivals in turn) win the first 8 labels against the
    anchor and lose the next 24; no single rival is ever shown ahead of the anchor."""
    names = mbpp_fold.test.model_names

    def earned(router):
        return names[router.anchor_choice(BALANCED)], router.base_earned(BALANCED)

    for keep, expected in ((False, [True, False, False, False]), (True, [True, True, True, False])):
        trained, _, *seen = _won_then_lost(mbpp_fold, keep, 3, earned)
        assert [anchor for anchor, _ in seen] == [trained] * 4
        assert [flag for _, flag in seen] == expected


def _labels(diff_of: dict[int, np.ndarray], favourite: int, models: int = 11):
    """Labels of ``models`` free models where model j scores ``diff_of[j]`` above model 0
    (the others tie with it), and the base predicts ``favourite`` best of the rivals."""
    from trouter.routers.online_anchor import Labels

    n = len(next(iter(diff_of.values())))
    perf = np.full((n, models), 0.5)
    for j, diff in diff_of.items():
        perf[:, 0] = np.where(diff < 0, 1.0, 0.5)
        perf[:, j] = np.where(diff > 0, 1.0, 0.5)
    prior = np.full((n, models), 0.5)
    prior[:, favourite] = 0.6
    zeros = np.zeros((n, models))
    return Labels(perf, zeros, prior, zeros, np.arange(n, dtype=float), np.zeros(n),
                  np.full(n, -1.0), np.full(n, -1.0), np.zeros((n, 0)))  # fmt: skip


def test_the_base_s_favourite_rival_is_tested_at_half_the_error_rate():
    """Weighted Bonferroni: the rival the base predicts best is named before any score is
    seen, so it is tested at alpha / 2 and the other nine at alpha / 18, not all ten at
    alpha / 10. A gain at z 2.6 (16 paired labels) then moves the anchor when the favourite
    shows it, and not when another rival does."""
    from trouter.routers.online_anchor import traffic_best_single

    diff = np.array([1.0] * 9 + [-1.0] * 2 + [0.0] * 5)
    params = {"min_evidence": 8.0, "confidence": 0.975, "margin": 0.0, "half_life": None,
              "student_t": False}  # fmt: skip
    on = {**params, "favourite": True}
    favourite_ahead = _labels({1: diff}, favourite=1)
    other_ahead = _labels({2: diff}, favourite=1)
    assert traffic_best_single(favourite_ahead, 0, BALANCED, params) == 0  # alpha / 10
    assert traffic_best_single(favourite_ahead, 0, BALANCED, on) == 1  # alpha / 2
    assert traffic_best_single(other_ahead, 0, BALANCED, on) == 0  # alpha / 18
    # a stronger gain passes for any rival either way
    strong = np.array([1.0] * 12 + [0.0] * 4)
    assert traffic_best_single(_labels({2: strong}, favourite=1), 0, BALANCED, on) == 2
