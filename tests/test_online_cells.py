"""The online router's cell structures (k-means, TRouter leaves, a linear model), on real
RouterBench rows (the committed fixture cut)."""

from __future__ import annotations

import numpy as np
import pytest

from trouter.evaluation.folds import Fold
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import Router, make_router
from trouter.routers.online import OnlineRouter
from trouter.routers.online_cells import (
    linear_coefficients,
    linear_correction,
    whitened_projection,
)
from trouter.routers.online_stats import EvidenceStats

BALANCED = SCENARIOS["balanced"]


def _router(fold: Fold, **params) -> OnlineRouter:
    base = make_router("best-single").fit(fold.train, fold.validation)
    return OnlineRouter.around(base, fold.train, **params)


def _labels(fold: Fold, rows, scores) -> list[dict]:
    """Background labels of the stream's ``rows`` with the given score matrix."""
    names, texts = fold.test.model_names, fold.test.texts
    return [
        {
            "id": f"l{t}",
            "kind": "label",
            "t": t,
            "query": texts[t],
            "scores": dict(zip(names, scores[t].tolist(), strict=True)),
            "costs": dict(zip(names, fold.test.normalised_cost[t].tolist(), strict=True)),
        }
        for t in rows
    ]


def test_the_projection_is_whitened():
    x = np.random.default_rng(0).normal(size=(500, 20)) * np.linspace(0.1, 3, 20)
    components, mean = whitened_projection(x.astype(np.float32), 8)
    z = (x - mean) @ components.T
    assert components.shape == (8, 20)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0, ddof=1), 1, rtol=1e-3)


def test_the_linear_cells_recover_a_residual_that_follows_the_query(mbpp_fold):
    """A model whose score moves with the query's first feature is predicted to move with it
    on queries it was never labelled on; a model with no labels gets no correction."""
    router = _router(mbpp_fold, cell_by="linear", linear_dims=8)
    n = len(mbpp_fold.test)
    x = router.features(list(mbpp_fold.test.texts))["embedding"]
    prior = router.features(list(mbpp_fold.test.texts))["performance"]
    scores = np.array(prior, dtype=float)
    scores[:, 0] += 0.1 * x[:, 0]  # model 0: above its prior where feature 0 is high
    half = n // 2
    router.partial_fit(_labels(mbpp_fold, range(half), scores))
    truth = 0.1 * (x[half:, 0] - x[:half, 0].mean())
    slope_perf, _ = linear_correction(router.stats_, x[half:], 1.0)
    assert np.corrcoef(slope_perf[:, 0], truth)[0, 1] > 0.95
    assert 0.8 < np.polyfit(truth, slope_perf[:, 0], 1)[0] <= 1.0
    assert np.abs(slope_perf[:, 1:]).max() < 1e-6  # the others' scores are their priors
    # within one task the features vary less than over the pool (whose variance is 1): the
    # default penalty, 20 pseudo-observations, shrinks the slope much more
    shrunk, _ = linear_correction(router.stats_, x[half:], 20.0)
    assert 0.2 < np.polyfit(truth, shrunk[:, 0], 1)[0] < 0.5

    # a decision record carries the features, so its event needs no query text
    (record,) = router.decide([mbpp_fold.test.texts[half]], BALANCED)
    np.testing.assert_allclose(record["embedding"], x[half], atol=1e-6)
    event = {"id": "s-half", "kind": "served", "t": half, "model": record["model"],
             "score": 1.0, **{k: record[k] for k in ("cell", "prior_performance",
                                                    "prior_cost", "embedding")}}  # fmt: skip
    before = router.stats_.lin_count.sum()
    assert router.partial_fit([event]).stats_.lin_count.sum() == before + 1

    fresh = _router(mbpp_fold, cell_by="linear", linear_dims=8)
    np.testing.assert_array_equal(linear_correction(fresh.stats_, x, 20.0)[0], 0.0)


def test_linear_state_is_order_free_and_survives_save_and_load(mbpp_fold, tmp_path):
    stream = mbpp_fold.test
    events = _labels(mbpp_fold, range(0, 120, 2), stream.performance)
    names = stream.model_names
    events += [
        {"id": f"s{t}", "kind": "served", "t": t, "query": stream.texts[t], "model": names[1],
         "score": float(stream.performance[t, 1]), "cost": float(stream.normalised_cost[t, 1])}
        for t in range(1, 120, 2)
    ]  # fmt: skip
    in_order = _router(mbpp_fold, cell_by="linear", half_life=40.0).partial_fit(events)
    shuffled = [events[i] for i in np.random.default_rng(3).permutation(len(events))]
    scrambled = _router(mbpp_fold, cell_by="linear", half_life=40.0)
    for start in range(0, len(shuffled), 9):
        scrambled.partial_fit(shuffled[start : start + 9])
    for name in ("lin_count", "lin_x", "lin_xx", "lin_r", "lin_xr"):
        np.testing.assert_allclose(
            getattr(in_order.stats_, name), getattr(scrambled.stats_, name), atol=1e-9
        )
    assert in_order.stats_.lin_count[1] > in_order.stats_.lin_count[0] > 0

    in_order.save(tmp_path / "linear")
    loaded = Router.load(tmp_path / "linear")
    queries = list(stream.texts[120:200])
    assert loaded.route(queries, BALANCED) == in_order.route(queries, BALANCED)
    np.testing.assert_allclose(loaded.label_embedding_, in_order.label_embedding_)
    np.testing.assert_allclose(loaded.stats_.lin_xx, in_order.stats_.lin_xx)


def test_the_ridge_solution_is_reused_until_the_sums_change(mbpp_fold):
    """The solved slopes are cached per change of the linear sums. They equal a solve from
    the saved sums after each batch of labels and served answers (discounted: a newer event
    rescales every sum, even one that adds nothing to them), after a late label (it adds
    without rescaling) and after a new model joins; with nothing new the same solution is
    served again."""
    stream, names = mbpp_fold.test, mbpp_fold.test.model_names
    router = _router(mbpp_fold, cell_by="linear", half_life=30.0)
    x = router.features(list(stream.texts[150:170]))["embedding"]

    def fresh_solve(penalty: float):
        rebuilt = EvidenceStats.from_state(router.stats_.to_state(), 30.0)
        return linear_correction(rebuilt, x, penalty)

    def check(penalty: float = 20.0) -> None:
        for got, want in zip(linear_correction(router.stats_, x, penalty),
                             fresh_solve(penalty), strict=True):  # fmt: skip
            np.testing.assert_allclose(got, want, atol=1e-10)

    for start in range(0, 90, 30):
        router.partial_fit(_labels(mbpp_fold, range(start, start + 15), stream.performance))
        router.partial_fit([
            {"id": f"s{t}", "kind": "served", "t": t, "query": stream.texts[t],
             "model": names[2], "score": float(stream.performance[t, 2]),
             "cost": float(stream.normalised_cost[t, 2])}
            for t in range(start + 15, start + 30)
        ])  # fmt: skip
        check()
        # a later answer logged without the embedding: it rescales the sums, adds nothing
        feats = router.features([stream.texts[start + 29]])
        router.partial_fit([
            {"id": f"bare{start}", "kind": "served", "t": start + 29.5, "model": names[1],
             "score": 1.0, "cost": 0.1, "cell": 0,
             "prior_performance": feats["performance"][0], "prior_cost": feats["cost"][0]}
        ])  # fmt: skip
        check()
        late = _labels(mbpp_fold, [100 + start], stream.performance)[0]
        router.partial_fit([{**late, "id": f"late{start}", "t": start + 1.5}])  # no rescale
        check()
        if start == 60:
            router.add_model("newcomer", 0.5)
            check()
    check(penalty=2.0)  # another penalty is another solution
    assert linear_correction(router.stats_, x, 2.0)[0].shape == (len(x), len(names) + 1)
    assert linear_coefficients(router.stats_, 2.0) is linear_coefficients(router.stats_, 2.0)


def test_an_event_without_recorded_features_feeds_the_totals_only(mbpp_fold):
    router = _router(mbpp_fold, cell_by="linear")
    feats = router.features([mbpp_fold.test.texts[0]])
    event = {
        "id": "s0", "kind": "served", "t": 0, "model": mbpp_fold.test.model_names[2],
        "score": 1.0, "cost": 0.1, "cell": 0,
        "prior_performance": feats["performance"][0], "prior_cost": feats["cost"][0],
    }  # fmt: skip
    odd = [[np.nan] * 32, [0.1] * 31, "not numbers", [[0.1, 0.2]] * 16]
    router.partial_fit([event, *({**event, "id": f"s{i + 1}", "embedding": e}
                                 for i, e in enumerate(odd))])  # fmt: skip
    assert router.stats_.count[router.stats_.total, 2] == 1 + len(odd)
    assert router.stats_.lin_count.sum() == 0


def test_taxonomy_cells_are_the_leaves_of_a_trouter_posterior(mbpp_fold, tmp_path):
    router = _router(mbpp_fold, cell_by="taxonomy")
    leaves = router._cell_router
    assert leaves is not None and leaves.name == "trouter"
    assert router.stats_.total == len(leaves.leaf_ids_)
    texts = list(mbpp_fold.test.texts[:60])
    expected = leaves.posterior(texts).argmax(axis=1)
    np.testing.assert_array_equal(router.features(texts)["cell"], expected)
    router.partial_fit(_labels(mbpp_fold, range(40), mbpp_fold.test.performance))
    assert router.stats_.count[:-1].sum() == pytest.approx(router.stats_.count[-1].sum())

    router.save(tmp_path / "taxonomy")
    loaded = Router.load(tmp_path / "taxonomy")
    np.testing.assert_array_equal(loaded.features(texts)["cell"], expected)
    assert loaded.route(texts, BALANCED) == router.route(texts, BALANCED)


def test_an_unknown_cell_structure_is_refused(mbpp_fold):
    with pytest.raises(ValueError, match="cell_by"):
        OnlineRouter(cell_by="leaves")
