"""The online router's decision rule: posterior utilities, a guarded switch, capped exploration.

Everything here is vectorised over queries and pure (no state is changed), so that the same
code serves one live request, a replayed stream and ``predict``.

For weights ``w`` and a query with base prediction ``b_j`` (utility of model ``j``) and
guarded choice ``g`` (the base's own choice, best-single where its guard falls back):

* the prior mean is ``b_g`` for ``g`` and ``min(b_j, b_g)`` for every other model, so that
  with no evidence the router serves exactly what its base serves;
* the evidence estimate is ``b_j + r_j``, with ``r_j`` the mean residual of ``j`` (observed
  minus predicted utility) over all cells, then per cell; each level is shrunk towards the
  level above with a pseudo-count;
* with the linear cell structure, a ridge prediction of each model's residual from the
  query's features is added to that (online_cells.linear_correction);
* another model ``j*`` (the best posterior mean) replaces ``g`` only when its mean gain is
  above ``margin`` and above ``z`` standard errors, where the standard error is the smaller
  of the independent one and the paired one from full-information rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from trouter.evaluation.scenarios import Weights
from trouter.routers.online_cells import linear_correction
from trouter.routers.online_stats import EvidenceStats

#: Prior second moment of a performance residual (a 0/1 score around 0.5) and of a cost one.
PRIOR_VAR_PERF, PRIOR_VAR_COST = 0.25, 0.02
#: Pseudo-count of those prior variances.
PRIOR_VAR_COUNT = 4.0


@dataclass
class Rule:
    """The hyper-parameters of a decision."""

    prior_strength: float = 10.0
    cell_strength: float = 20.0
    confidence: float = 0.9
    margin: float = 0.0
    min_evidence: float = 8.0
    explore: float = 0.0
    explore_max_loss: float = 0.02
    explore_floor: float = 0.2
    linear_penalty: float | None = None  # the linear cells' ridge penalty (None: cell_strength)


@dataclass
class Decisions:
    """Per query: chosen model, its propensity, every model's probability, exploration flag,
    the posterior mean utilities, and the served model without exploration."""

    chosen: np.ndarray
    propensity: np.ndarray
    probabilities: np.ndarray
    explored: np.ndarray
    mean: np.ndarray
    exploit: np.ndarray
    guard: np.ndarray
    overlap: np.ndarray
    arm: np.ndarray | None = None  # the served A/B test's arm per query (online_challenge)
    proposal: np.ndarray | None = None  # what the A/B test drew from, where it drew


def posterior(stats: EvidenceStats, features: dict[str, np.ndarray], weights: Weights, rule: Rule):
    """(mean utility (n, m), standard error (n, m), per-model residual variance (m,)) for
    queries with ``features`` (prior ``performance`` and ``cost``, ``guard``, ``cell``, and
    for the linear cell structure ``embedding``)."""
    perf, cost = features["performance"], features["cost"]
    guard, cells = features["guard"], features["cell"]
    wp, wc = weights.performance, weights.cost
    n, m = perf.shape
    rows = np.arange(n)
    base = wp * perf + wc * cost
    at_guard = base[rows, guard]
    prior = np.minimum(base, at_guard[:, None])
    prior[rows, guard] = at_guard
    total = stats.total
    count = stats.count[total]
    residual = (wp * stats.sum_perf[total] + wc * stats.sum_cost[total]) / np.maximum(count, 1e-12)
    n0 = rule.prior_strength
    mean = (n0 * prior + count * (base + residual)) / (n0 + count)
    if total > 0:  # cells below the totals row
        cell_count = stats.count[cells]
        cell_residual = (wp * stats.sum_perf[cells] + wc * stats.sum_cost[cells]) / np.maximum(
            cell_count, 1e-12
        )
        n1 = rule.cell_strength
        mean = (n1 * mean + cell_count * (base + cell_residual)) / (n1 + cell_count)
    if stats.dims and "embedding" in features:
        penalty = rule.cell_strength if rule.linear_penalty is None else rule.linear_penalty
        slope_perf, slope_cost = linear_correction(stats, features["embedding"], penalty)
        mean = mean + wp * slope_perf + wc * slope_cost
    v0 = PRIOR_VAR_COUNT
    var_perf = (stats.sq_perf[total] + v0 * PRIOR_VAR_PERF) / (count + v0)
    var_cost = (stats.sq_cost[total] + v0 * PRIOR_VAR_COST) / (count + v0)
    variance = wp * wp * var_perf + wc * wc * var_cost
    stderr = np.broadcast_to(np.sqrt(variance / (n0 + count)), (n, m))
    return mean, stderr, variance


def paired_stderr(
    stats: EvidenceStats,
    first: np.ndarray,
    second: np.ndarray,
    weights: Weights,
    prior_var: np.ndarray,
    n0: float,
) -> np.ndarray:
    """Standard error of the mean utility difference of model pairs, from full-information
    rows where both were scored (infinite where there are none)."""
    wp, wc = weights.performance, weights.cost
    count = stats.pair_count[first, second]
    safe = np.maximum(count, 1e-12)
    mean_d = (wp * stats.pair_dp[first, second] + wc * stats.pair_dc[first, second]) / safe
    second_moment = (
        wp * wp * stats.pair_dpp[first, second]
        + wc * wc * stats.pair_dcc[first, second]
        + 2 * wp * wc * stats.pair_dpc[first, second]
    ) / safe
    centred = np.maximum(second_moment - mean_d * mean_d, 0.0)
    v0 = PRIOR_VAR_COUNT
    variance = (count * centred + v0 * prior_var) / (count + v0)
    return np.where(count > 0, np.sqrt(variance / (n0 + count)), np.inf)


def decide(
    stats: EvidenceStats,
    features: dict[str, np.ndarray],
    weights: Weights,
    rule: Rule,
    rng: np.random.Generator | None = None,
) -> Decisions:
    """Decisions for n queries (see module); exploration only with ``rng`` and ``rule.explore``."""
    cost, guard = features["cost"], features["guard"]
    n, m = cost.shape
    rows = np.arange(n)
    mean, stderr, variance = posterior(stats, features, weights, rule)
    best = np.argmax(mean - 1e-12 * cost, axis=1)
    gain = mean[rows, best] - mean[rows, guard]
    independent = np.sqrt(stderr[rows, best] ** 2 + stderr[rows, guard] ** 2)
    paired = paired_stderr(
        stats, best, guard, weights, variance[best] + variance[guard], rule.prior_strength
    )
    z = float(ndtri(rule.confidence))
    evidence = stats.count[stats.total][best]
    switch = (
        (best != guard)
        & (gain > rule.margin)
        & (gain > z * np.minimum(independent, paired))
        & (evidence >= rule.min_evidence)
    )
    exploit = np.where(switch, best, guard)
    # chance that each model beats the served one (independent normal approximation)
    served_mean = mean[rows, exploit][:, None]
    spread = np.sqrt(stderr**2 + stderr[rows, exploit][:, None] ** 2)
    beats = ndtr((mean - served_mean) / np.maximum(spread, 1e-12))
    beats[rows, exploit] = 0.0
    overlap = beats.max(axis=1)
    probabilities = np.zeros((n, m))
    probabilities[rows, exploit] = 1.0
    chosen, explored = exploit.copy(), np.zeros(n, dtype=bool)
    if rule.explore > 0 and rng is not None:
        candidates = (beats > rule.explore_floor) & (served_mean - mean < rule.explore_max_loss)
        sizes = candidates.sum(axis=1)
        share = np.where(sizes > 0, rule.explore, 0.0)
        probabilities = probabilities * (1 - share)[:, None]
        probabilities += candidates * (share / np.maximum(sizes, 1))[:, None]
        draw = rng.random(n) < share
        for i in np.flatnonzero(draw):
            chosen[i] = int(rng.choice(np.flatnonzero(candidates[i])))
        explored = draw
    propensity = probabilities[rows, chosen]
    return Decisions(chosen, propensity, probabilities, explored, mean, exploit, guard, overlap)
