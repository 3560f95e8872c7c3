"""The learned baselines (knn, mlp, mf) and their shared tuning on a real RouterBench slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slices import routerbench_slices

from trouter.data.dataset import RoutingDataset
from trouter.routers import Prediction, Router, make_router
from trouter.routers.tuning import (
    Candidate,
    masked_mse,
    merge,
    select_best,
    tuning_split,
    validation_loss,
)

#: Small grids keep the torch fits to a few seconds; the full grids are exercised by knn.
ROUTERS = {
    "knn": {},
    "mlp": {"hidden": [64], "weight_decay": [1e-2], "max_epochs": 60},
    "mf": {"dim": [16], "weight_decay": [1e-2], "max_epochs": 60},
}


@pytest.fixture(scope="module")
def bench(data_dir: Path) -> dict[str, RoutingDataset]:
    return routerbench_slices(train=100, validation=30, test=40)


@pytest.fixture(scope="module")
def fitted(bench: dict[str, RoutingDataset]) -> dict[str, Router]:
    return {
        name: make_router(name, seed=0, **params).fit(bench["train"], bench["validation"])
        for name, params in ROUTERS.items()
    }


def _with_holes(ds: RoutingDataset, fraction: float, seed: int) -> RoutingDataset:
    """A copy with ``fraction`` of performance and cost cells masked (NaN)."""
    rng = np.random.default_rng(seed)
    holes = rng.random(ds.performance.shape) < fraction
    out = ds.subset(np.arange(len(ds)))
    out.performance = np.where(holes, np.nan, ds.performance)
    out.cost = np.where(holes, np.nan, ds.cost)
    out.normalised_cost = np.where(holes, np.nan, ds.normalised_cost)
    return out


# ----- the shared criterion --------------------------------------------------------------
def test_validation_loss_ignores_masked_cells_and_matches_models_by_name(bench):
    val = bench["validation"].subset(np.arange(6))
    perf, cost = val.performance.copy(), val.normalised_cost.copy()
    exact = Prediction(val.model_names, np.nan_to_num(perf), np.nan_to_num(cost))
    assert validation_loss(exact, val) == pytest.approx(0.0)
    # the same prediction with its columns reversed scores the same
    rev = Prediction(val.model_names[::-1], exact.performance[:, ::-1], exact.cost[:, ::-1])
    assert validation_loss(rev, val) == pytest.approx(0.0)
    # a wrong guess in a masked cell costs nothing; one in an observed cell does
    holed = _with_holes(val, 0.0, 0)
    holed.performance[0, 0] = np.nan
    wrong = Prediction(val.model_names, exact.performance.copy(), exact.cost)
    wrong.performance[0, 0] = 1.0 - np.nan_to_num(perf[0, 0])
    assert validation_loss(wrong, holed) == pytest.approx(0.0)
    assert validation_loss(wrong, val) > 0.0
    assert np.isnan(masked_mse(np.zeros(3), np.full(3, np.nan)))


def test_select_best_prefers_lowest_finite_loss_and_earliest_on_ties():
    cands = [
        Candidate({"k": 5}, 0.3),
        Candidate({"k": 10}, float("nan")),
        Candidate({"k": 20}, 0.2),
        Candidate({"k": 50}, 0.2),
    ]
    assert select_best(cands).params == {"k": 20}
    assert select_best([Candidate({"k": 1}, float("nan")), Candidate({"k": 2}, 0.5)]).params == {
        "k": 2
    }
    with pytest.raises(ValueError, match="no hyper-parameter candidates"):
        select_best([])


def test_tuning_split_carves_validation_from_train_only(bench):
    fit_rows, val_rows = tuning_split(bench["train"], None, seed=3)
    assert set(fit_rows.query_ids).isdisjoint(val_rows.query_ids)
    assert set(fit_rows.query_ids) | set(val_rows.query_ids) == set(bench["train"].query_ids)
    assert 0.1 < len(val_rows) / len(bench["train"]) < 0.2
    both = merge(fit_rows, val_rows)
    assert len(both) == len(bench["train"]) and set(both.splits) == {"train"}


# ----- the routers -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ROUTERS))
def test_predictions_have_pool_shape_and_unit_range(fitted, bench, name):
    test = bench["test"]
    pred = fitted[name].predict(test.texts)
    assert pred.models == test.model_names
    for arr in (pred.performance, pred.cost):
        assert arr.shape == (len(test), len(test.models))
        assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0


@pytest.mark.parametrize("name", list(ROUTERS))
def test_beats_the_constant_predictor_on_held_out_rows(fitted, bench, name):
    test = bench["test"]
    constant = make_router("best-single").fit(bench["train"], bench["validation"])
    learned = validation_loss(fitted[name].predict(test), test)
    assert learned < validation_loss(constant.predict(test), test) - 0.005
    # and the query matters: predictions differ between queries of different benchmarks
    pred = fitted[name].predict(test)
    per_task = [pred.performance[test.tasks == t].mean(axis=0) for t in sorted(set(test.tasks))]
    assert np.ptp(np.stack(per_task), axis=0).max() > 0.05


@pytest.mark.parametrize("name", list(ROUTERS))
def test_save_load_gives_identical_predictions(fitted, bench, name, tmp_path):
    router = fitted[name]
    router.save(tmp_path / name)
    loaded = Router.load(tmp_path / name)
    assert type(loaded) is type(router)
    before, after = router.predict(bench["test"]), loaded.predict(bench["test"])
    np.testing.assert_array_equal(before.performance, after.performance)
    np.testing.assert_array_equal(before.cost, after.cost)


@pytest.mark.parametrize("name", list(ROUTERS))
def test_masked_targets_give_finite_losses_and_predictions(bench, name):
    train = _with_holes(bench["train"], 0.3, 0)
    val = _with_holes(bench["validation"], 0.3, 1)
    router = make_router(name, seed=0, **ROUTERS[name]).fit(train, val)
    assert np.isfinite(router.validation_loss_)
    pred = router.predict(bench["test"])
    assert np.isfinite(pred.performance).all() and np.isfinite(pred.cost).all()
    assert np.isfinite(validation_loss(router.predict(val), val))


@pytest.mark.parametrize("name", ["mlp", "mf"])
def test_same_seed_same_predictions_other_seed_differs(fitted, bench, name):
    again = make_router(name, seed=0, **ROUTERS[name]).fit(bench["train"], bench["validation"])
    other = make_router(name, seed=1, **ROUTERS[name]).fit(bench["train"], bench["validation"])
    first = fitted[name].predict(bench["test"])
    np.testing.assert_array_equal(first.performance, again.predict(bench["test"]).performance)
    assert not np.array_equal(first.performance, other.predict(bench["test"]).performance)


def test_knn_tunes_on_validation_and_is_deterministic_without_validation(bench):
    router = make_router("knn", seed=0).fit(bench["train"], bench["validation"])
    for metric in ("performance", "cost"):
        table = router.tuning_[metric]
        best = min(table, key=lambda row: row["validation_loss"])
        assert router.k_[metric] == best["k"]
    a = make_router("knn", seed=4).fit(bench["train"]).predict(bench["test"])
    b = make_router("knn", seed=4).fit(bench["train"]).predict(bench["test"])
    np.testing.assert_array_equal(a.performance, b.performance)


@pytest.mark.parametrize("name", list(ROUTERS))
def test_masked_cells_are_unknown_not_zero(bench, name):
    """Mask every failure of one model: a router that read NaN as 0 would learn its true
    accuracy back; one that masks sees only successes and predicts close to 1."""
    train, val = (bench[s].subset(np.arange(len(bench[s]))) for s in ("train", "validation"))
    for ds in (train, val):
        ds.performance[:, 0] = np.where(ds.performance[:, 0] == 0, np.nan, ds.performance[:, 0])
    router = make_router(name, seed=0, **ROUTERS[name]).fit(train, val)
    true_rate = np.nanmean(bench["train"].performance[:, 0])
    assert true_rate < 0.85
    assert router.predict(bench["test"]).performance[:, 0].mean() > 0.9
