"""metric-router on a small real RouterBench slice (ARC-Challenge, MBPP, Winogrande)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from slices import routerbench_slices

from trouter.data.dataset import RoutingDataset
from trouter.data.suites import load_suite
from trouter.routers import Router, make_router
from trouter.routers.metric_router import DEFAULT_SHRINKAGES
from trouter.routers.tuning import validation_loss
from trouter.taxonomy.assign import leaf_similarity


@pytest.fixture(scope="module")
def bench(data_dir: Path) -> dict[str, RoutingDataset]:
    return routerbench_slices(train=45, validation=15, test=30)


@pytest.fixture(scope="module")
def fitted(bench: dict[str, RoutingDataset]) -> Router:
    return make_router("metric-router").fit(bench["train"], bench["validation"])


def test_fit_predict_beats_best_single(fitted, bench) -> None:
    test = bench["test"]
    prediction = fitted.predict(test)
    assert prediction.models == test.model_names
    assert prediction.performance.shape == prediction.cost.shape == test.performance.shape
    assert np.all((prediction.performance >= 0) & (prediction.performance <= 1))
    assert np.all((prediction.cost >= 0) & (prediction.cost <= 1))
    # the three tasks differ a lot in how models score and cost: the task type carries it
    best_single = make_router("best-single").fit(bench["train"], bench["validation"])
    assert validation_loss(prediction, test) < validation_loss(best_single.predict(test), test)
    # queries of different tasks get different predictions (not a constant router)
    by_task = {t: prediction.performance[test.tasks == t].mean(axis=0) for t in set(test.tasks)}
    assert len({tuple(np.round(v, 6)) for v in by_task.values()}) == len(by_task)


def test_tuning_grid_and_selection(fitted, bench) -> None:
    table = fitted.tuning_
    assert {row["shrinkage"] for row in table} == set(DEFAULT_SHRINKAGES)
    assert {row["assignment"] for row in table} == {"soft", "top1"}
    assert fitted.validation_loss_ == pytest.approx(
        min(r["validation_loss"] for r in table), abs=1e-6
    )
    assert fitted.shrinkage_ in DEFAULT_SHRINKAGES and fitted.assignment_ in ("soft", "top1")
    # infinite shrinkage ignores the task type: every query gets the global means
    flat = make_router("metric-router", shrinkage=float("inf")).fit(
        bench["train"], bench["validation"]
    )
    pred = flat.predict(bench["test"])
    assert np.allclose(pred.performance, pred.performance[0])


def test_top1_without_shrinkage_is_the_leaf_mean(bench) -> None:
    train, validation, test = bench["train"], bench["validation"], bench["test"]
    router = make_router("metric-router", assignment="top1", shrinkage=0.0, refit=False)
    router.fit(train, validation)
    train_leaf = leaf_similarity(router.taxonomy_, train.texts).argmax(axis=1)
    test_leaf = leaf_similarity(router.taxonomy_, test.texts[:10]).argmax(axis=1)
    prediction = router.predict(test.texts[:10])
    for i, leaf in enumerate(test_leaf):
        same = train_leaf == leaf
        if same.any():  # a leaf reached by training rows predicts their masked mean
            expected = np.nanmean(train.performance[same], axis=0)
            expected = np.where(np.isnan(expected), np.nanmean(train.performance, axis=0), expected)
            np.testing.assert_allclose(prediction.performance[i], expected, atol=1e-6)


def test_masked_cells_are_not_zero_scores(bench) -> None:
    train = bench["train"]
    masked = RoutingDataset(
        name="masked",
        query_ids=train.query_ids,
        texts=train.texts,
        tasks=train.tasks,
        benchmarks=train.benchmarks,
        models=train.models,
        performance=np.where(np.arange(len(train))[:, None] % 2 == 0, np.nan, train.performance),
        cost=train.cost,
        splits=train.splits,
        normalised_cost=train.normalised_cost,
    )
    settings = {"assignment": "top1", "shrinkage": 3.0, "refit": False}
    with_masks = make_router("metric-router", **settings).fit(masked, bench["validation"])
    # a masked performance cell must count exactly as if its row had not been seen at all
    odd_rows = train.subset(np.arange(1, len(train), 2))
    only_odd = make_router("metric-router", **settings).fit(odd_rows, bench["validation"])
    texts = bench["test"].texts
    np.testing.assert_allclose(
        with_masks.predict(texts).performance, only_odd.predict(texts).performance, atol=1e-9
    )
    assert np.isfinite(with_masks.predict(texts).performance).all()


def test_custom_taxonomy_and_save_load(fitted, bench, tmp_path: Path) -> None:
    tiny = {
        "name": "two-tasks",
        "domains": [
            {
                "name": dom,
                "definition": f"{dom} questions.",
                "example": ex,
                "children": [
                    {
                        "name": "General",
                        "definition": f"Any {dom.lower()} question.",
                        "example": ex,
                        "children": [
                            {"name": lvl, "definition": f"{lvl} ones.", "example": ex}
                            for lvl in ("Easy", "Hard")
                        ],
                    }
                ],
            }
            for dom, ex in (
                ("Coding", "Write a python function to sort a list of tuples by the second item."),
                (
                    "Science",
                    "Which gas do plants absorb from the air?\nA) oxygen\nB) carbon dioxide",
                ),
            )
        ],
    }
    path = tmp_path / "two.json"
    path.write_text(json.dumps(tiny))
    router = make_router("metric-router", taxonomy=str(path)).fit(
        bench["train"], bench["validation"]
    )
    assert router.leaf_ids_ == [
        "Coding > General > Easy",
        "Coding > General > Hard",
        "Science > General > Easy",
        "Science > General > Hard",
    ]
    rows = {row["leaf_id"]: row["rows"] for row in router.leaf_table()}
    assert sum(rows.values()) == pytest.approx(len(bench["train"]) + len(bench["validation"]))

    saved = fitted.save(tmp_path / "router")
    loaded = Router.load(saved)
    texts = bench["test"].texts[:8]
    np.testing.assert_allclose(loaded.predict(texts).performance, fitted.predict(texts).performance)


def test_bad_settings_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown assignment"):
        make_router("metric-router", assignment="nearest")
    with pytest.raises(ValueError, match="temperatures must be positive"):
        make_router("metric-router", temperature=0.0)
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "b", "domains": []}')
    router = make_router("metric-router", taxonomy=str(broken))
    with pytest.raises(ValueError, match="broken.json: top level: 'domains' must be a non-empty"):
        router.fit(load_suite("routerbench").subset(np.arange(40)))
