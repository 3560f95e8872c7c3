"""The online router's served A/B test (``challenge``): a random share of the queries where
the base's proposal differs from the anchor is served the proposal, and served feedback from
the two arms decides whether the base has earned its choices. On real RouterBench rows (the
committed fixture cut); the scores fed back are the test's own, so each outcome is known."""

from __future__ import annotations

import numpy as np
import pytest

from trouter.evaluation.folds import Fold
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import Router, make_router
from trouter.routers.online import OnlineRouter

BALANCED = SCENARIOS["balanced"]
SHARE = 0.2


@pytest.fixture(scope="module")
def knn(mbpp_fold) -> OnlineRouter:
    return make_router("knn").fit(mbpp_fold.train, mbpp_fold.validation)


def _router(fold: Fold, base: Router, **params) -> OnlineRouter:
    return OnlineRouter.around(base, fold.train, **{"challenge": SHARE, **params})


def _serve(router: OnlineRouter, fold: Fold, rows: range, score, seed: int = 0) -> list[dict]:
    """Decide each query with a seeded draw; the served event scores ``score(decision)``."""
    rng = np.random.default_rng(seed)
    events = []
    for t in rows:
        (made,) = router.decide([fold.test.texts[t % len(fold.test)]], BALANCED, rng)
        event = {"id": f"s{t}", "kind": "served", "t": t, "model": made["model"],
                 "score": score(made), "cell": made["cell"],
                 "prior_performance": made["prior_performance"],
                 "prior_cost": made["prior_cost"]}  # fmt: skip
        event.update({k: made[k] for k in ("ab_arm", "ab_policy") if k in made})
        events.append(event)
        router.partial_fit([event])
    return events


def test_the_draw_serves_the_proposal_to_its_share_where_it_differs(mbpp_fold, knn):
    router = _router(mbpp_fold, knn, challenge=0.5)
    share = router.challenge_share(BALANCED)
    assert share == pytest.approx(0.25)  # before any feedback: half the share
    anchor = router.models_[router.anchor_choice(BALANCED)]
    rng = np.random.default_rng(1)
    made = router.decide(list(mbpp_fold.test.texts) * 5, BALANCED, rng)  # no state change
    armed = [d for d in made if "ab_arm" in d]
    assert len(armed) > 50 and all(d["proposal_model"] != anchor for d in armed)
    assert all(d["model"] == anchor for d in made if "ab_arm" not in d)
    treat = [d for d in armed if d["ab_arm"] == "treat"]
    assert 0.15 < len(treat) / len(armed) < 0.35  # the 25% share, with noise
    assert all(d["model"] == d["proposal_model"] and d["explored"] for d in treat)
    assert all(d["propensity"] == pytest.approx(share) for d in treat)
    control = [d for d in armed if d["ab_arm"] == "control"]
    assert all(d["model"] == anchor and d["propensity"] == pytest.approx(1 - share)
               for d in control)  # fmt: skip
    assert all(d["ab_policy"] == [BALANCED.performance, BALANCED.cost] for d in armed)
    # routing without a draw (what route() serves) is never in the test
    plain = router.decide(list(mbpp_fold.test.texts[:20]), BALANCED)
    assert all("ab_arm" not in d for d in plain)


def test_treat_ahead_earns_the_base_its_choices_and_behind_does_not(mbpp_fold, knn):
    ahead = _router(mbpp_fold, knn)
    _serve(ahead, mbpp_fold, range(400), lambda d: float(d.get("ab_arm") == "treat"))
    assert ahead.challenge_earned(BALANCED) and ahead.earned(BALANCED)
    assert not ahead.base_earned(BALANCED)  # no labels: the served test alone
    made = ahead.decide(list(mbpp_fold.test.texts[:100]), BALANCED, np.random.default_rng(2))
    assert all("ab_arm" not in d for d in made)  # earned: no more draws
    anchor = ahead.models_[ahead.anchor_choice(BALANCED)]
    assert any(d["model"] != anchor for d in made)  # the base's own choices are served
    assert all(d["model"] == d["proposal_model"] for d in made)

    behind = _router(mbpp_fold, knn)
    events = _serve(behind, mbpp_fold, range(400), lambda d: float(d.get("ab_arm") != "treat"))
    assert not behind.earned(BALANCED)
    # the losing treat arm drains the draw's share (and the treated models' served scores
    # pull the proposals back to the anchor): what was drawn cost the first queries only
    drawn = [e for e in events if e.get("ab_arm") == "treat"]
    assert drawn and max(e["t"] for e in drawn) < 200
    # and the draw's share drains as the treat arm loses; it fills as it wins
    assert behind.challenge_share(BALANCED) < 0.01 * SHARE
    assert ahead.challenge_share(BALANCED) > 0.99 * SHARE


def test_the_arms_rebuild_from_their_event_log_with_repeats_skipped(mbpp_fold, knn, tmp_path):
    """Replaying the log (the store's order) gives the same arms and looks; an event seen
    before is skipped. (A look reads the arms as they stand when the treat count reaches
    it, so the log's order, not only its set of events, decides each look.)"""
    live = _router(mbpp_fold, knn)
    events = _serve(live, mbpp_fold, range(300), lambda d: float(d.get("ab_arm") == "treat"))
    rebuilt = _router(mbpp_fold, knn).partial_fit(events + events[:50])  # repeats skipped
    for name in ("ab_policies_", "ab_treated_", "ab_looks_", "ab_passed_"):
        np.testing.assert_array_equal(getattr(live, name), getattr(rebuilt, name))
    np.testing.assert_allclose(live.stats_.arms, rebuilt.stats_.arms)
    loaded = Router.load(live.save(tmp_path / "online"))
    np.testing.assert_allclose(loaded.stats_.arms, live.stats_.arms)
    assert loaded.challenge_earned(BALANCED) == live.challenge_earned(BALANCED)


def test_without_a_share_nothing_is_drawn(mbpp_fold, knn):
    router = _router(mbpp_fold, knn, challenge=0.0)
    made = router.decide(list(mbpp_fold.test.texts[:100]), BALANCED, np.random.default_rng(0))
    assert all("ab_arm" not in d for d in made)
    with pytest.raises(ValueError, match="challenge"):
        _router(mbpp_fold, knn, challenge=0.9)
    for margin in (float("nan"), -0.1):
        with pytest.raises(ValueError, match="challenge_margin"):
            _router(mbpp_fold, knn, challenge_margin=margin)


def test_a_gain_below_the_margin_does_not_pass(mbpp_fold, knn):
    """The treat arm scored 0.7 and the control 0.5, without noise: a gain per drawn query
    that passes at margin 0 and never at a margin above it, however long it is drawn."""
    outcomes = {}
    for margin in (0.0, 0.3):
        router = _router(mbpp_fold, knn, challenge_margin=margin)
        _serve(router, mbpp_fold, range(600), lambda d: 0.7 if d.get("ab_arm") == "treat" else 0.5)
        gain = router._arm_gain(0, BALANCED)[0]
        outcomes[margin] = (router.challenge_earned(BALANCED), int(router.ab_looks_[0]), gain)
    assert outcomes[0.0][0] and outcomes[0.0][1] == 1  # passed at its first look
    passed, looks, gain = outcomes[0.3]
    assert not passed and looks >= 3 and 0 < gain < 0.3  # it looked, each time below


def test_labels_that_rule_the_base_out_overrule_the_draw(mbpp_fold, knn):
    """The served test has passed; then background labels on which the base's proposals
    all lose to the anchor rule the base out: its choices are no longer served, and no
    more queries are drawn."""
    router = _router(mbpp_fold, knn)
    _serve(router, mbpp_fold, range(400), lambda d: float(d.get("ab_arm") == "treat"))
    assert router.earned(BALANCED)
    names, texts = router.models_, list(mbpp_fold.test.texts)
    anchor = names[router.anchor_choice(BALANCED)]
    made = router.decide(texts, BALANCED)
    rows = [i for i, d in enumerate(made) if d["proposal_model"] != anchor][:16]
    assert len(rows) == 16
    router.partial_fit([
        {"id": f"l{i}", "kind": "label", "t": 400 + k, "query": texts[i],
         "proposal_model": made[i]["proposal_model"],
         "scores": {n: float(n == anchor) for n in names}, "costs": dict.fromkeys(names, 0.5)}
        for k, i in enumerate(rows)
    ])  # fmt: skip
    assert router.base_ruled_out(BALANCED) and router.challenge_earned(BALANCED)
    assert not router.earned(BALANCED)
    later = router.decide(texts[:100], BALANCED, np.random.default_rng(3))
    assert all("ab_arm" not in d and d["model"] == anchor for d in later)


def test_labels_against_the_proposals_drain_the_share_before_any_test(mbpp_fold, knn):
    """Four background labels (below the tests' eight) on which the proposals lose to the
    anchor leave the draw almost nothing; four on which they win leave it its share."""
    shares = {}
    for proposals_win in (False, True):
        router = _router(mbpp_fold, knn)
        names, texts = router.models_, list(mbpp_fold.test.texts)
        anchor = names[router.anchor_choice(BALANCED)]
        made = router.decide(texts, BALANCED)
        rows = [i for i, d in enumerate(made) if d["proposal_model"] != anchor][:4]
        router.partial_fit([
            {"id": f"l{i}", "kind": "label", "t": k, "query": texts[i],
             "proposal_model": made[i]["proposal_model"],
             "scores": {n: float((n == anchor) != proposals_win) for n in names},
             "costs": dict.fromkeys(names, 0.5)}
            for k, i in enumerate(rows)
        ])  # fmt: skip
        assert not router.base_ruled_out(BALANCED)  # too few labels for the tests
        shares[proposals_win] = router.challenge_share(BALANCED)
    assert shares[False] < 0.01 * SHARE
    assert shares[True] == pytest.approx(SHARE / 2)  # no served feedback yet: half


def _arm_answer(router: OnlineRouter, text: str, t: int, arm: str, score: float, model: int):
    """A served answer of the A/B test's ``arm`` by pool model ``model``, at one price for
    every model (only the scores differ between the arms)."""
    feats = router.features([text], BALANCED)
    return {"id": f"{arm}{t}", "kind": "served", "t": t, "model": router.models_[model],
            "score": score, "cost": 0.3, "cell": 0,
            "prior_performance": feats["performance"][0], "prior_cost": feats["cost"][0],
            "ab_arm": arm, "ab_policy": [BALANCED.performance, BALANCED.cost]}  # fmt: skip


def test_a_look_that_finds_the_proposals_behind_ends_the_draw(mbpp_fold, knn):
    """Noisy feedback keeps the adaptive share from draining: the arms' first look (8 treat
    answers, 40% scored 1 against the control's 60%) finds the proposals behind, and no
    query is drawn after it; the same arms with the treat arm at 60% are not ended."""
    text = mbpp_fold.test.texts[0]
    for treat_rate, ends in ((0.4, True), (0.6, False)):
        router = _router(mbpp_fold, knn, challenge_margin=0.0)
        anchor = router.anchor_choice(BALANCED)
        rival = (anchor + 1) % len(router.models_)
        control = [_arm_answer(router, text, t, "control", float(t % 5 < 3), anchor)
                   for t in range(40)]  # fmt: skip
        treat = [_arm_answer(router, text, 100 + t, "treat", float(t % 5 < 5 * treat_rate), rival)
                 for t in range(8)]  # fmt: skip
        router.partial_fit(control + treat)
        assert router.ab_looks_[0] == 1
        assert bool(router.ab_futile_[0]) == ends
        assert (router.challenge_share(BALANCED) == 0.0) == ends
        made = router.decide(list(mbpp_fold.test.texts), BALANCED, np.random.default_rng(0))
        assert any("ab_arm" in d for d in made) != ends
