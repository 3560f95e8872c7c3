"""Few-shot and transfer folds, cost saved at X% quality, pool re-normalisation, labelled
metadata: on a small built dataset and a labelled file written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_harness import REFERENCE, built

from trouter.data.labelled import load_labelled
from trouter.evaluation import harness, metrics
from trouter.evaluation.report import learning_curve_markdown, summarise
from trouter.evaluation.scenarios import SCENARIOS


def test_few_shot_adds_nested_shots_from_the_task_train_split_only() -> None:
    data = built()
    train_ids = {
        t: set(data.query_ids[(data.splits == "train") & (data.tasks == t)])
        for t in ("math", "code")
    }
    test_ids = set(data.query_ids[data.splits == "test"])
    seen: dict[int, set] = {}
    for k in (0, 5, 10):
        folds = {f.task: f for f in harness.few_shot_folds(data, 0, 0.2, k, shot_pool=10)}
        fold = folds["math"]
        assert fold.shots == k
        fit_ids = set(fold.train.query_ids) | set(fold.validation.query_ids)
        own = {q for q in fit_ids if q in train_ids["math"]}
        assert len(own) == k, "exactly K rows of the held-out task are given"
        assert not fit_ids & test_ids, "no test row of any task is trained on"
        # The task's validation rows come from its K shots only.
        val_math = set(fold.validation.query_ids[fold.validation.tasks == "math"])
        assert val_math <= own and (k == 0 or 0 < len(val_math) < k)
        seen[k] = own
        assert set(fold.test.tasks) == {"math"}
    assert seen[5] <= seen[10], "shots are nested: the 5 are the first 5 of the 10"
    assert harness.few_shot_folds(data, 1, 0.2, 5)[1].train.query_ids.tolist() != (
        harness.few_shot_folds(data, 0, 0.2, 5)[1].train.query_ids.tolist()
    )
    # K=all gives the task every train row (in-domain for that task).
    (fold,) = [f for f in harness.few_shot_folds(data, 0, 0.2, None) if f.task == "code"]
    fit_ids = set(fold.train.query_ids) | set(fold.validation.query_ids)
    assert train_ids["code"] <= fit_ids and fold.shots is None


def test_test_only_task_draws_shots_from_test_and_scores_the_same_rows_for_every_k() -> None:
    data = built()
    tested = {}
    for k in (0, 3, 5):
        fold = {f.task: f for f in harness.few_shot_folds(data, 0, 0.2, k, shot_pool=5)}["ood"]
        tested[k] = set(fold.test.query_ids)
        assert len(tested[k]) + fold.masked_rows == 7 - 5, "the shot pool leaves the test rows"
        fit_ids = set(fold.train.query_ids) | set(fold.validation.query_ids)
        assert not fit_ids & tested[k], "a shot is never scored"
        assert sum(1 for q in fit_ids if q in set(data.query_ids[data.tasks == "ood"])) == k
    assert tested[0] == tested[3] == tested[5]


def test_cost_saved_reads_the_hull() -> None:
    points = np.array([[0.0, 0.5], [1.0, 1.0], [0.4, 0.6]])
    # hull (0, .5) -> (1, 1): 95% of quality 1.0 at cost 0.9 of the top model's 1.0
    assert metrics.cost_saved(points, 1.0, 1.0, 0.95) == pytest.approx(0.1)
    assert metrics.cost_saved(points, 1.0, 2.0, 1.0) == pytest.approx(0.5)
    assert math.isnan(metrics.cost_saved(points, 1.2, 1.0, 0.95)), "never reached"
    assert math.isnan(metrics.cost_saved(points, 1.0, 0.0, 0.95)), "no cost data"


def test_records_carry_shots_and_savings_and_curve_table() -> None:
    data = built()
    context = {"suite": "built", "setting": "few-shot"}
    records = []
    for k in (0, 5, None):
        for fold in harness.few_shot_folds(data, 0, 0.2, k, shot_pool=5):
            records += harness.evaluate_fold(fold, REFERENCE, SCENARIOS, 0, context=context)
    records += harness.mean_over_tasks(records)
    means = [r for r in records if r["task"] == "mean"]
    assert {r["shots"] for r in means} == {0, 5, None}
    for record in records:
        assert "cost_saved_95" in record and "cost_saved_100" in record
    oracle = next(r for r in means if r["router"] == "oracle" and r["shots"] == 0)
    assert oracle["cost_saved_95"] > 0, "the oracle reaches the top model's quality for less"
    table = learning_curve_markdown(summarise(records))
    assert "| K=0 | K=5 | K=all |" in table and "| oracle |" in table


def test_select_models_renormalises_over_the_kept_pool() -> None:
    data = built()
    kept = data.select_models(["large", "small"])
    for bench in ("bench-a", "bench-b"):
        block = kept.normalised_cost[kept.benchmarks == bench]
        assert np.nanmin(block) == 0.0 and np.nanmax(block) == 1.0
    reordered = data.select_models(["large", "medium", "small"])
    np.testing.assert_array_equal(reordered.normalised_cost[:, 0], data.normalised_cost[:, 2])
    with pytest.raises(KeyError, match="unknown models"):
        data.select_models(["huge"])


def _row(i: int, leaf, **extra) -> dict:
    results = {
        "a": {"performance": 1.0, "cost_usd": 0.001 * (i + 1)},
        "b": {"performance": 0.5, "cost_usd": 0.01},
    }
    return {"id": f"r{i}", "question": f"question {i}", "reference": "x", "leaf_id": leaf,
            "generator": "g", "results": results, **extra}  # fmt: skip


def test_labelled_metadata_and_unknown_leaves(tmp_path: Path) -> None:
    path = tmp_path / "real.jsonl"
    rows = [
        _row(0, "Mathematics > Arithmetic > Easy"),
        _row(1, "", benchmark="gsm8k", cost_source="tokens x list prices"),
        _row(2, None, benchmark="humaneval", task="code"),
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_labelled(path)
    assert list(data.benchmarks) == ["synthetic", "gsm8k", "humaneval"]
    assert list(data.tasks) == ["Mathematics", "gsm8k", "code"]
    assert list(data.leaf_ids) == ["Mathematics > Arithmetic > Easy", "", ""]
    assert "tokens x list prices" in data.cost_source
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_row(0, "", benchmark=3)) + "\n")
    with pytest.raises(Exception, match="bad.jsonl:1: optional field 'benchmark'"):
        load_labelled(bad)


def test_transfer_fold_tests_every_row_of_a_labelled_file(tmp_path: Path) -> None:
    source = built()
    target = built(seed=5).select_models(["small", "large"])
    target.splits[:] = "train"  # a labelled test file has no test split of its own
    (fold,) = harness.transfer_folds(source, target)
    assert fold.train.model_names == fold.test.model_names == ["small", "large"]
    assert len(fold.test) + fold.masked_rows == len(target) and fold.shots == 0
