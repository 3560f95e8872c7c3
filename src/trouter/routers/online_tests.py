"""The online router's paired tests and when they look at the labels.

* :func:`paired_gain` - the discounted mean and standard error of a per-label utility
  difference between two models on the same queries;
* :func:`significant` / :func:`bounds` - its one-sided test at the router's confidence,
  Bonferroni-corrected for the number of rivals (:func:`divisors`);
* :func:`look` / :func:`look_counts` - the doubling looks that split the error rate, so that
  re-testing as labels arrive keeps the chance of a false move within alpha.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri, stdtrit

#: Prior variance (and its pseudo-count) of a per-query utility difference between models.
GAIN_PRIOR_VAR, GAIN_PRIOR_COUNT = 0.05, 2.0


def first_look(params: dict) -> int:
    """The count of the first doubling look: ``first_look``, else ``min_evidence``."""
    return max(int(params.get("first_look") or params["min_evidence"]), 1)


def look(n: int, params: dict) -> tuple[int, dict]:
    """The labels the tests read after ``n`` labels, and the parameters they run at. With
    ``looks="every"`` all ``n``, at ``confidence``; with ``looks="doubling"`` the tests look
    only at ``first_look`` x 2^k labels (``min_evidence`` when unset), the k-th look at
    error rate alpha / 2^(k+1)
    (alpha = 1 - confidence), so that over every look of a stream the chance of a false move
    stays within alpha; between looks the outcome of the last one stands. With a planned
    number of labels (``label_plan``: a fixed batch, not a rate) the last look is at the
    plan and spends the error rate the doubling looks before it left; labels past the plan
    are not tested."""
    counts = [] if params["looks"] == "every" else look_counts(n, params)
    if not counts:
        return n, params
    # the k-th doubling look spends alpha/2^(k+1); a look at the plan, all that is left
    k, planned = len(counts) - 1, counts[-1] == params.get("label_plan")
    alpha = (1.0 - params["confidence"]) * 2.0 ** -(k + (not planned))
    return counts[-1], {**params, "confidence": 1.0 - alpha}


def look_counts(n: int, params: dict) -> list[int]:
    """The label counts of the doubling looks taken by the time ``n`` labels are in (the
    plan's last look included), in order."""
    first, plan = first_look(params), params.get("label_plan")
    planned = plan is not None and plan >= first
    counts, count = [], first
    while count <= n and not (planned and count >= plan):
        counts.append(int(count))
        count *= 2
    return counts + [int(plan)] if planned and n >= plan else counts


def paired_gain(
    diff: np.ndarray, times: np.ndarray, half_life: float | None
) -> tuple[float, float, float]:
    """(mean, standard error, weight) of per-label differences (NaN: not comparable)."""
    ok = ~np.isnan(diff)
    times, diff = times[ok], diff[ok]
    if not len(diff):
        return 0.0, np.inf, 0.0
    weight = (
        np.ones(len(times)) if half_life is None else 2.0 ** ((times - times.max()) / half_life)
    )
    total = float(weight.sum())
    mean = float((weight * diff).sum() / total)
    second = float((weight * (diff - mean) ** 2).sum())
    variance = (second + GAIN_PRIOR_COUNT * GAIN_PRIOR_VAR) / (total + GAIN_PRIOR_COUNT)
    return mean, float(np.sqrt(variance / total)), total


def significant(gain: tuple[float, float, float], params: dict, rivals: float = 1) -> bool:
    """Whether a :func:`paired_gain` is above ``margin`` one-sided at ``confidence``, on at
    least ``min_evidence`` labels' weight (with ``student_t``, Student's t with weight - 1
    degrees of freedom, else the normal);
    the best of ``rivals`` gains is tested at the Bonferroni level, so that one of many
    models ahead by chance rarely passes."""
    if gain[2] < params["min_evidence"]:
        return False
    return bool(bounds(gain, params, rivals)[0] > params["margin"])


def bounds(
    gain: tuple[float, float, float], params: dict, rivals: float = 1
) -> tuple[float, float]:
    """One-sided lower and upper confidence bounds of a :func:`paired_gain`, at the level
    :func:`significant` tests."""
    mean, stderr, total = gain
    level = 1.0 - (1.0 - params["confidence"]) / max(rivals, 1)
    # Student's t, not the normal: a dozen labels estimate their own variance poorly
    quantile = (
        float(stdtrit(max(total - 1.0, 1.0), level)) if params["student_t"] else float(ndtri(level))
    )
    return mean - quantile * stderr, mean + quantile * stderr


def divisors(m: int, anchor: int, late: np.ndarray | None = None) -> np.ndarray:
    """Each model's Bonferroni divisor for its test against ``anchor``: the number of
    rivals, or, while some models joined late (``late``), half the error rate shared among
    them and half among the others. A newcomer's comparison is asked for when it joins, not
    picked as the best of many after the fact, so it needs no more than its share."""
    late = np.zeros(m, dtype=bool) if late is None else np.asarray(late, dtype=bool).copy()
    late[anchor] = False
    n_late = int(late.sum())
    if not n_late:
        return np.full(m, max(m - 1, 1), dtype=float)
    others = max(m - 1 - n_late, 1)
    return np.where(late, 2.0 * n_late, 2.0 * others)
