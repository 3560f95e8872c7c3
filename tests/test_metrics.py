"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.evaluation import metrics
from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.routers.base import Prediction


def tiny(performance: list[list[float]], cost: list[list[float]]) -> RoutingDataset:
    """Two models A (cheap) and B (dear) on one benchmark; every row a test row."""
    n = len(performance)
    return RoutingDataset(
        name="tiny",
        query_ids=[f"q{i}" for i in range(n)],
        texts=[f"question {i}" for i in range(n)],
        tasks=["t"] * n,
        benchmarks=["b"] * n,
        models=[ModelInfo("A"), ModelInfo("B")],
        performance=np.array(performance, dtype=float),
        cost=np.array(cost, dtype=float),
        splits=["test"] * n,
    )


@pytest.fixture
def four_rows() -> RoutingDataset:
    # Raw cost 1 USD for A and 3 USD for B everywhere: normalised cost is 0 for A, 1 for B.
    return tiny([[1, 0], [0, 1], [1, 1], [0, 0]], [[1, 3]] * 4)


def test_choice_metrics_by_hand(four_rows: RoutingDataset) -> None:
    scored = metrics.choice_metrics(four_rows, np.array([0, 1, 0, 1]), SCENARIOS["balanced"])
    # Utilities 0.5*perf - 0.5*cost: 0.5, 0.0, 0.5, -0.5 -> mean 0.125.
    assert scored["utility"] == pytest.approx(0.125)
    assert scored["performance"] == pytest.approx(0.75)
    assert scored["cost"] == pytest.approx(0.5)
    assert scored["raw_cost"] == pytest.approx(8.0)
    assert scored["selection"] == {"A": 0.5, "B": 0.5}


def test_selection_lists_unchosen_models(four_rows: RoutingDataset) -> None:
    scored = metrics.choice_metrics(four_rows, np.zeros(4, dtype=int), Weights(1.0, 0.0))
    assert scored["selection"] == {"A": 1.0, "B": 0.0}
    assert scored["utility"] == pytest.approx(0.5)


def test_masked_rows_are_dropped_and_refused() -> None:
    data = tiny([[1, 0], [np.nan, 1], [1, 1]], [[1, 3], [1, 3], [1, np.nan]])
    scorable, masked = metrics.scorable_rows(data)
    assert masked == 2
    assert list(scorable.query_ids) == ["q0"]
    with pytest.raises(ValueError, match="masked"):
        metrics.choice_metrics(data, np.zeros(3, dtype=int), SCENARIOS["balanced"])


def test_cost_quality_curve_of_the_oracle(four_rows: RoutingDataset) -> None:
    truth = Prediction(["A", "B"], four_rows.performance, four_rows.normalised_cost)
    curve = metrics.cost_quality_curve(four_rows, truth.choose, shares=[0.0, 1.0])
    # Quality only: A, B, A (tie -> cheaper), A (tie) -> cost 1/4, performance 3/4.
    # Cost only: A everywhere -> cost 0, performance 1/2.
    np.testing.assert_allclose(curve, [[0.25, 0.75], [0.0, 0.5]])
    assert len(metrics.cost_quality_curve(four_rows, truth.choose)) == 21


def test_hull_and_aiq_on_a_hand_made_curve() -> None:
    points = np.array([[0.2, 0.5], [0.6, 0.9], [0.4, 0.6], [0.8, 0.85]])
    hull = metrics.nondecreasing_hull(points)
    # (0.8, 0.85) is dominated by (0.6, 0.9); (0.4, 0.6) lies under the chord 0.2 -> 0.6.
    np.testing.assert_allclose(hull, [[0.2, 0.5], [0.6, 0.9]])
    # 0 below 0.2; trapezoid 0.4 * (0.5 + 0.9) / 2 = 0.28; flat 0.9 over [0.6, 1] = 0.36.
    assert metrics.aiq(points) == pytest.approx(0.64)


def test_aiq_single_point_and_flat_extension() -> None:
    assert metrics.aiq(np.array([[0.0, 0.7]])) == pytest.approx(0.7)
    assert metrics.aiq(np.array([[0.5, 1.0]])) == pytest.approx(0.5)
    # A point that is both cheaper and better makes the other irrelevant.
    assert metrics.aiq(np.array([[0.1, 0.8], [0.3, 0.6]])) == pytest.approx(0.9 * 0.8)


def test_aiq_rejects_empty_or_nan_curves() -> None:
    with pytest.raises(ValueError):
        metrics.aiq(np.empty((0, 2)))
    with pytest.raises(ValueError):
        metrics.aiq(np.array([[0.1, np.nan]]))


def test_gap_closed() -> None:
    assert metrics.gap_closed(0.6, 0.5, 0.9) == pytest.approx(0.25)
    assert metrics.gap_closed(0.9, 0.5, 0.9) == pytest.approx(1.0)
    assert metrics.gap_closed(0.4, 0.5, 0.9) == pytest.approx(-0.25)
    assert math.isnan(metrics.gap_closed(0.5, 0.5, 0.5))
