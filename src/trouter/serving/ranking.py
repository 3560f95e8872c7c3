"""Policies and the ranking of served models: how a routing request states its preference,
and how one prediction becomes a choice, a reason and a fallback order.

The choice itself is :func:`trouter.routers.base.decide`'s, as in the evaluation harness; this
module adds the request's limits (a dollar cap on the predicted cost of the call, or the older
cap on predicted normalised cost) and orders the remaining models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.routers.base import Prediction, decide

#: Completion tokens assumed for a call's predicted USD cost when none is given.
DEFAULT_OUTPUT_TOKENS = 256
#: Characters per token of the input estimate (English prose and code average about 4).
CHARS_PER_TOKEN = 4


class RoutingRequestError(ValueError):
    """A routing call that cannot be answered: empty query, unknown scenario, bad budget."""


class BudgetError(RoutingRequestError):
    """No served model's predicted cost fits the request's ``max_cost_usd``."""


@dataclass(frozen=True)
class Policy:
    """How a query's model is chosen: utility under ``weights`` (among the models whose
    predicted USD cost is within ``max_cost_usd``), or the best predicted performance within
    ``max_normalised_cost``."""

    name: str
    weights: Weights | None = None
    max_normalised_cost: float | None = None
    max_cost_usd: float | None = None


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise RoutingRequestError(f"{name} must be a number, got {value!r}")
    return float(value)


def resolve_policy(
    scenario: str | None = None,
    weights: Weights | tuple[float, float] | None = None,
    max_normalised_cost: float | None = None,
    max_cost_usd: float | None = None,
) -> Policy:
    """Turn the ways of stating a preference into one :class:`Policy`.

    ``scenario`` and ``weights`` exclude each other, and ``max_normalised_cost`` excludes
    both; ``max_cost_usd`` combines with either. With none given the policy is ``balanced``.
    """
    given = [
        label
        for label, v in (
            ("scenario", scenario),
            ("weights", weights),
            ("max_normalised_cost", max_normalised_cost),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise RoutingRequestError(
            f"give only one of scenario, weights or max_normalised_cost (got {given})"
        )
    usd = None
    if max_cost_usd is not None:
        usd = _number(max_cost_usd, "max_cost_usd")
        if usd <= 0 or math.isinf(usd):
            raise RoutingRequestError(f"max_cost_usd is US dollars per call, > 0; got {usd}")
        if max_normalised_cost is not None:
            raise RoutingRequestError("give max_cost_usd or max_normalised_cost, not both")
    if max_normalised_cost is not None:
        limit = _number(max_normalised_cost, "max_normalised_cost")
        if not 0.0 <= limit <= 1.0:
            raise RoutingRequestError(
                f"max_normalised_cost is a predicted normalised cost in [0, 1] (0 = the "
                f"cheapest, 1 = the dearest call seen in training); got {limit:g}. For a "
                "limit in dollars use max_cost_usd"
            )
        return Policy(name=f"max-normalised-cost<={limit:g}", max_normalised_cost=limit)
    if weights is not None:
        if not isinstance(weights, Weights):
            try:
                perf, cost = (float(w) for w in weights)
            except (TypeError, ValueError) as err:
                raise RoutingRequestError(
                    f"weights must be Weights or a (w_perf, w_cost) pair, got {weights!r}"
                ) from err
            weights = Weights(performance=perf, cost=cost)
        if not all(math.isfinite(w) for w in (weights.performance, weights.cost)):
            raise RoutingRequestError(f"weights must be finite numbers, got {weights}")
        name = f"weights({weights.performance:g},{weights.cost:g})"
    else:
        name = "balanced" if scenario is None else scenario
        if name not in SCENARIOS:
            raise RoutingRequestError(
                f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}, "
                "or pass weights=(w_perf, w_cost)"
            )
        weights = SCENARIOS[name]
    if usd is not None:
        name = f"{name},max-cost-usd<={usd:g}"
    return Policy(name=name, weights=weights, max_cost_usd=usd)


def estimate_input_tokens(text: str) -> int:
    """A tokenizer-free estimate of a prompt's tokens (about 4 characters per token)."""
    return tokens_of_chars(len(text))


def tokens_of_chars(chars: int) -> int:
    """:func:`estimate_input_tokens` for ``chars`` characters of prompt, without joining a
    conversation into one string."""
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


def _replace_nan(values: np.ndarray, fill: float) -> np.ndarray:
    """``values`` with NaN replaced (np.nan_to_num costs more than a one-query routing)."""
    values = np.asarray(values, dtype=float)
    nan = np.isnan(values)
    return np.where(nan, fill, values) if nan.any() else values


def _limit(prediction: Prediction, cost: np.ndarray, policy: Policy, cost_usd) -> np.ndarray:
    """The models the policy's limit allows per query (True everywhere without a limit)."""
    if policy.max_normalised_cost is not None:
        allowed = cost <= policy.max_normalised_cost
        # none within: the cheapest predicted model (a preference, not a reason to fail)
        none = ~allowed.any(axis=1)
        allowed[none, np.argmin(cost[none], axis=1)] = True
        return allowed
    if policy.max_cost_usd is None:
        return np.ones(cost.shape, dtype=bool)
    assert cost_usd is not None
    allowed = _replace_nan(cost_usd, np.inf) <= policy.max_cost_usd
    if len(allowed) and not allowed.any(axis=1).all():
        row = int(np.flatnonzero(~allowed.any(axis=1))[0])
        known = np.isfinite(cost_usd[row])
        cheapest = (
            f"the cheapest predicted call costs ${np.min(cost_usd[row][known]):.6f}"
            if known.any()
            else "no served model has a known price"
        )
        raise BudgetError(f"no served model fits max_cost_usd={policy.max_cost_usd:g}: {cheapest}")
    return allowed


def rank_models(
    prediction: Prediction, policy: Policy, cost_usd: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per query: model indices best first, the policy's score matrix (NaN = excluded), and
    the reason for each first choice. The first choice is :func:`decide`'s; the others follow
    by score (ties: cheaper first), then the excluded models cheapest first."""
    perf = _replace_nan(prediction.performance, -np.inf)
    cost = _replace_nan(prediction.cost, np.inf)
    weights = policy.weights or Weights(performance=1.0, cost=0.0)
    limited = policy.max_normalised_cost is not None or policy.max_cost_usd is not None
    allowed = _limit(prediction, cost, policy, cost_usd) if limited else None
    decision = decide(prediction, weights, allowed)
    score = weights.utility(perf, cost)
    key = -_replace_nan(score, np.inf)
    if allowed is not None:
        score = np.where(allowed, score, np.nan)
        key = np.where(allowed, key, np.inf)
    order = np.lexsort((cost, key), axis=-1)
    first = decision.choice[:, None]
    if len(order) and (order[:, :1] != first).any():
        rest = order[order != first].reshape(len(order), -1)
        order = np.concatenate([first, rest], axis=1)
    return order, score, decision.reasons
