"""Folds, scoring and aggregation of the evaluation harness, on a small built dataset."""

from __future__ import annotations

import numpy as np
import pytest

from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.evaluation import harness
from trouter.evaluation.report import markdown_tables, summarise
from trouter.evaluation.scenarios import SCENARIOS

REFERENCE = ["oracle", "best-single", "random", "cheapest"]


def built(seed: int = 0) -> RoutingDataset:
    """Three tasks with train and test rows, one test-only task, three models, masks."""
    rng = np.random.default_rng(seed)
    tasks, splits = [], []
    for task, n_train, n_test in (("math", 30, 10), ("code", 24, 8), ("qa", 18, 6), ("ood", 0, 7)):
        tasks += [task] * (n_train + n_test)
        splits += ["train"] * n_train + ["test"] * n_test
    n = len(tasks)
    skill = {
        "math": [0.2, 0.5, 0.9],
        "code": [0.6, 0.4, 0.8],
        "qa": [0.7, 0.7, 0.75],
        "ood": [0.3, 0.6, 0.6],
    }
    performance = np.array([rng.random(3) < skill[t] for t in tasks], dtype=float)
    cost = np.array([[0.001, 0.004, 0.02]] * n) * rng.uniform(0.5, 1.5, size=(n, 3))
    performance[3, 1] = np.nan  # a masked training cell
    test_rows = np.flatnonzero(np.array(splits) == "test")
    performance[test_rows[0], 2] = np.nan  # a masked math test row
    cost[test_rows[-1], 0] = np.nan  # a masked ood test row
    return RoutingDataset(
        name="built",
        query_ids=[f"q{i}" for i in range(n)],
        texts=[f"{t} question number {i}" for i, t in enumerate(tasks)],
        tasks=tasks,
        benchmarks=["bench-a" if t in ("math", "qa") else "bench-b" for t in tasks],
        models=[ModelInfo("small"), ModelInfo("medium"), ModelInfo("large")],
        performance=performance,
        cost=cost,
        splits=splits,
    )


def test_in_domain_validation_is_carved_from_train_only() -> None:
    data = built()
    train_ids = set(data.query_ids[data.splits == "train"])
    folds = {}
    for seed in (0, 1):
        (fold,) = harness.in_domain_folds(data, seed, 0.2)
        val_ids, fit_ids = set(fold.validation.query_ids), set(fold.train.query_ids)
        assert val_ids and val_ids <= train_ids and not val_ids & fit_ids
        assert val_ids | fit_ids == train_ids
        folds[seed] = val_ids
        # Test rows with a masked cell are not scored, but counted.
        assert fold.masked_rows == 2 and len(fold.test) == 31 - 2
    assert folds[0] != folds[1], "the run seed should change the validation carve"


def test_cold_start_never_trains_on_the_held_out_task() -> None:
    data = built()
    folds = harness.cold_start_folds(data, seed=0, validation_fraction=0.15)
    assert [f.task for f in folds] == ["code", "math", "ood", "qa"]
    test_ids = set(data.query_ids[data.splits == "test"])
    for fold in folds:
        seen = np.concatenate([fold.train.tasks, fold.validation.tasks])
        assert fold.task not in set(seen)
        assert "ood" not in set(seen), "a test-only task must never be trained on"
        assert set(fold.test.tasks) == {fold.task}
        assert not test_ids & (set(fold.train.query_ids) | set(fold.validation.query_ids))
        assert fold.test.complete_rows.all()
    by_task = {f.task: f for f in folds}
    assert by_task["math"].masked_rows == 1 and by_task["ood"].masked_rows == 1


def test_limit_rows_keeps_every_task_and_is_deterministic() -> None:
    data = built()
    small = harness.limit_rows(data, 9)
    for split in ("train", "test"):
        rows = small.split(split)
        assert len(rows) == 9
        expected = {"math", "code", "qa"} | ({"ood"} if split == "test" else set())
        assert set(rows.tasks) == expected
    assert list(harness.limit_rows(data, 9).query_ids) == list(small.query_ids)
    with pytest.raises(ValueError):
        harness.limit_rows(data, 0)


def test_oracle_bounds_every_router_and_gap_anchors() -> None:
    data = built()
    (fold,) = harness.in_domain_folds(data, 0, 0.15)
    records = harness.evaluate_fold(fold, REFERENCE, SCENARIOS, seed=0, context={"suite": "b"})
    assert len(records) == len(REFERENCE) * len(SCENARIOS)
    for scenario in SCENARIOS:
        rows = {r["router"]: r for r in records if r["scenario"] == scenario}
        for name, row in rows.items():
            assert row["utility"] <= rows["oracle"]["utility"] + 1e-9, (scenario, name)
            assert row["aiq"] <= rows["oracle"]["aiq"] + 1e-9, name
            assert sum(row["selection"].values()) == pytest.approx(1.0)
            assert row["n_test"] == 29 and row["masked_rows"] == 2
        assert rows["oracle"]["gap_closed"] == pytest.approx(1.0)
        assert rows["best-single"]["gap_closed"] == pytest.approx(0.0)
        # The cheapest router always picks the cheapest model of the training data.
        assert rows["cheapest"]["selection"]["small"] == 1.0


def test_evaluate_fold_requires_the_baselines() -> None:
    (fold,) = harness.in_domain_folds(built(), 0, 0.15)
    with pytest.raises(ValueError, match="baseline"):
        harness.evaluate_fold(fold, ["random"], SCENARIOS, seed=0)


def test_cold_start_means_and_tables() -> None:
    data = built()
    records = []
    context = {"suite": "built", "setting": "cold-start"}
    for seed in (0, 1):
        for fold in harness.cold_start_folds(data, seed, 0.15):
            records += harness.evaluate_fold(fold, REFERENCE, SCENARIOS, seed, context=context)
    means = harness.mean_over_tasks(records)
    assert len(means) == len(REFERENCE) * len(SCENARIOS) * 2
    pick = [
        r
        for r in records
        if r["router"] == "random" and r["scenario"] == "balanced" and r["seed"] == 1
    ]
    mean = next(
        r
        for r in means
        if r["router"] == "random" and r["scenario"] == "balanced" and r["seed"] == 1
    )
    assert mean["n_tasks"] == 4
    assert mean["utility"] == pytest.approx(np.mean([r["utility"] for r in pick]))
    assert mean["n_test"] == sum(r["n_test"] for r in pick)
    assert mean["raw_cost"] == pytest.approx(sum(r["raw_cost"] for r in pick))
    rows = summarise(records + means)
    assert {r["seeds"] for r in rows} == {2}
    oracle = next(r for r in rows if r["router"] == "oracle" and r["scenario"] == "balanced")
    assert oracle["gap_closed_mean"] == pytest.approx(1.0)
    text = markdown_tables(rows)
    assert "built · cold-start" in text and "| random |" in text


def test_synthetic_fold_uses_the_shared_pool() -> None:
    suite = built()
    labelled = built(seed=3).select_models(["large", "small"])
    labelled.splits[labelled.splits == "test"] = "validation"
    (fold,) = harness.synthetic_folds(labelled, suite)
    assert fold.train.model_names == fold.test.model_names == ["small", "large"]
    assert len(fold.validation) == 31
    # Cost is re-normalised over the shared pool: each benchmark spans [0, 1] again.
    restricted = harness.restrict(suite, ["small", "large"])
    for bench in ("bench-a", "bench-b"):
        block = restricted.normalised_cost[restricted.benchmarks == bench]
        assert np.nanmin(block) == 0.0 and np.nanmax(block) == 1.0
    with pytest.raises(ValueError, match="share 1 pool model"):
        harness.synthetic_folds(labelled.select_models(["large"]), suite)
