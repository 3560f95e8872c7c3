"""Scoring routed choices the way the method's evaluation protocol defines it.

A router's choices are scored with the *real* labels of the chosen models: their
performance in [0, 1] and their cost min-max normalised per benchmark
(``RoutingDataset.normalised_cost``). Rows with any masked cell are not scored, because a
masked cell has no true value to score a choice (or the oracle's alternative) against.

The cost-quality curve sweeps the weight given to cost from 0 to 1; its area (AIQ, the
"average improvement in quality" of RouterBench) summarises a router over all trade-offs at
once, so that a router tuned for one scenario cannot look good by accident.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.scenarios import Weights

#: Cost shares swept for the cost-quality curve: 21 points from 0 (quality only) to 1.
DEFAULT_SHARES: tuple[float, ...] = tuple(float(s) for s in np.linspace(0.0, 1.0, 21))


def scorable_rows(test: RoutingDataset) -> tuple[RoutingDataset, int]:
    """The test rows that can be scored, and how many were dropped for masked cells."""
    complete = test.complete_rows
    return test.subset(complete), int((~complete).sum())


def choice_metrics(test: RoutingDataset, choices: np.ndarray, weights: Weights) -> dict:
    """Metrics of one model choice per row of ``test`` (which must have no masked cell).

    ``utility`` is ``weights`` applied to the chosen model's real performance and normalised
    cost, averaged over rows; ``raw_cost`` is the total USD the choices would have cost;
    ``selection`` is the share of rows sent to each pool model (every model listed, zeros
    included, so that shares from different runs average correctly).
    """
    n = len(test)
    choices = np.asarray(choices, dtype=int)
    if choices.shape != (n,):
        raise ValueError(f"{test.name}: {choices.shape[0]} choices for {n} test rows")
    if n == 0:
        raise ValueError(f"{test.name}: no scorable test rows")
    if not test.complete_rows.all():
        raise ValueError(f"{test.name}: test rows with masked cells must be dropped first")
    rows = np.arange(n)
    performance = test.performance[rows, choices]
    cost = test.normalised_cost[rows, choices]
    counts = np.bincount(choices, minlength=len(test.models))
    return {
        "utility": float(np.mean(weights.utility(performance, cost))),
        "performance": float(np.mean(performance)),
        "cost": float(np.mean(cost)),
        "raw_cost": float(np.sum(test.cost[rows, choices])),
        "selection": {name: float(c / n) for name, c in zip(test.model_names, counts, strict=True)},
    }


def cost_quality_curve(
    test: RoutingDataset,
    choose,
    shares: Sequence[float] = DEFAULT_SHARES,
    usd: bool = False,
) -> np.ndarray:
    """Points (mean cost, mean performance) of the routed choices per cost share.

    ``choose`` maps a :class:`Weights` to one model index per test row, typically
    ``prediction.choose``; each share ``s`` uses ``Weights.from_cost_share(s)``. Cost is
    the normalised cost, or raw USD per query with ``usd``. Returns an array of shape
    (len(shares), 2) in the order of ``shares``.
    """
    points = []
    rows = np.arange(len(test))
    cost = test.cost if usd else test.normalised_cost
    for share in shares:
        picked = np.asarray(choose(Weights.from_cost_share(share)), dtype=int)
        points.append(
            (float(np.mean(cost[rows, picked])), float(np.mean(test.performance[rows, picked])))
        )
    return np.asarray(points, dtype=float).reshape(-1, 2)


def nondecreasing_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the non-decreasing upper convex hull of (cost, performance) points.

    First the dominated points are dropped (another point is no more expensive and at least
    as good), which leaves points whose performance rises with cost; then the upper convex
    hull of those is kept, because mixing two routing settings at random reaches every point
    on the segment between them. The vertices are returned sorted by cost.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError("the cost-quality curve has no points")
    if not np.isfinite(pts).all():
        raise ValueError("the cost-quality curve has non-finite points")
    # Sort by cost, and for equal cost by decreasing performance, then keep the Pareto front.
    order = np.lexsort((-pts[:, 1], pts[:, 0]))
    front: list[tuple[float, float]] = []
    for cost, perf in pts[order]:
        if not front or perf > front[-1][1]:
            front.append((cost, perf))
    hull: list[tuple[float, float]] = []
    for point in front:
        # Pop the last vertex while it lies on or below the segment from the one before it.
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (point[1] - y0) - (y1 - y0) * (point[0] - x0) >= 0:
                hull.pop()
            else:
                break
        hull.append(point)
    return np.asarray(hull, dtype=float)


def aiq(points: np.ndarray, cost_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """Area under the non-decreasing convex hull of a cost-quality curve, per unit cost.

    The hull (see :func:`nondecreasing_hull`) is extended to the edges of ``cost_range``
    (normalised cost, [0, 1] by default) the same way for every router:

    * to the right of its most expensive vertex it stays flat at that vertex's performance
      (a larger budget can always be spent the same way);
    * to the left of its cheapest vertex it is 0 (no routing setting of this router reaches
      that low a cost, so it earns no area there).

    The area is divided by the width of ``cost_range``, so it is a mean performance in [0, 1].
    """
    low, high = cost_range
    if not high > low:
        raise ValueError(f"cost range must be increasing, got {cost_range}")
    hull = nondecreasing_hull(points)
    xs = np.clip(hull[:, 0], low, high)
    ys = hull[:, 1]
    # Vertices outside the range are clipped onto its edges; the flat extension closes it.
    xs = np.append(xs, high)
    ys = np.append(ys, ys[-1])
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (high - low)


def gap_closed(utility: float, best_single: float, oracle: float) -> float:
    """Share of the best-single -> oracle utility gap that a router closes.

    1 means as good as the oracle, 0 as good as always using the best single model, and
    negative worse than it. NaN when the gap is (numerically) zero, where the share has no
    meaning.
    """
    gap = oracle - best_single
    if abs(gap) < 1e-12:
        return float("nan")
    return float((utility - best_single) / gap)


#: Cost shares swept for "cost saved": the AIQ grid plus small shares, where a router moves
#: from the top model to cheaper ones and the 95%-quality point usually lies.
SAVING_SHARES: tuple[float, ...] = tuple(
    float(s) for s in np.unique(np.concatenate([DEFAULT_SHARES, np.geomspace(1e-4, 0.05, 12)]))
)
#: Quality levels (shares of the top model's performance) reported as ``cost_saved_<X>``.
SAVING_LEVELS: tuple[int, ...] = (95, 100)


def cost_saved(points: np.ndarray, top_performance: float, top_cost: float, level: float) -> float:
    """Share of the top model's cost saved at ``level`` (e.g. 0.95) of its quality.

    Read off the router's non-decreasing convex hull of (cost, performance) points (a
    random mix of two routing settings reaches every point between them, RouteLLM's CPT
    idea): the cheapest hull point whose performance is at least ``level`` times the top
    single model's, as a saving relative to always calling the top model. NaN when the hull
    never reaches that quality or the top model costs nothing (no cost data).
    """
    if not top_cost > 0 or not np.isfinite(top_cost):
        return float("nan")
    target = level * top_performance
    hull = nondecreasing_hull(points)
    reached = np.flatnonzero(hull[:, 1] >= target - 1e-12)
    if len(reached) == 0:
        return float("nan")
    i = int(reached[0])
    if i == 0:
        cost = hull[0, 0]
    else:
        (x0, y0), (x1, y1) = hull[i - 1], hull[i]
        cost = x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return float(1.0 - cost / top_cost)


def savings(test: RoutingDataset, choose, top_model: int) -> dict[str, float]:
    """``cost_saved_<X>`` for every :data:`SAVING_LEVELS` X, against pool model ``top_model``."""
    points = cost_quality_curve(test, choose, SAVING_SHARES, usd=True)
    top_performance = float(np.mean(test.performance[:, top_model]))
    top_cost = float(np.mean(test.cost[:, top_model]))
    return {
        f"cost_saved_{level}": cost_saved(points, top_performance, top_cost, level / 100)
        for level in SAVING_LEVELS
    }
