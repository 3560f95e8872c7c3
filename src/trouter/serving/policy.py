"""Which policy a proxy request is routed under, and what a call may cost in USD.

A policy is named by the request's ``model`` (``trouter-balanced``, ``trouter-0.7:-0.3``, or
``trouter`` for the client key's own policy), and the ``x-trouter-policy`` header overrides
it (a scenario name or ``<w_perf>:<w_cost>``). ``x-trouter-max-cost-usd`` caps the predicted
cost of the call: a token estimate of the request times the pool's prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trouter.evaluation.scenarios import SCENARIOS, resolve_scenarios
from trouter.llm.pool import ModelEndpoint
from trouter.serving.ranking import DEFAULT_OUTPUT_TOKENS, Policy, resolve_policy
from trouter.serving.requests import ProxyError, invalid

PREFIX = "trouter-"
#: ``model: trouter``: the client key's policy, or ``balanced``.
DEFAULT_MODEL = "trouter"
#: in the order ``/v1/models`` lists them
POLICY_MODELS = {
    f"{PREFIX}{name}": name for name in ("balanced", "cost-first", "performance-first")
}
assert set(POLICY_MODELS.values()) == set(SCENARIOS)
POLICY_HEADER = "x-trouter-policy"
MAX_COST_HEADER = "x-trouter-max-cost-usd"


def parse_policy(text: str) -> Policy:
    """One scenario name or one ``<w_perf>:<w_cost>`` pair (``trouter eval``'s spelling);
    400 otherwise."""
    spec = text.strip()
    try:
        chosen = resolve_scenarios(spec)
        if spec == "all" or len(chosen) != 1:
            raise ValueError(f"give one scenario or one <w_perf>:<w_cost> pair, not {spec!r}")
        ((name, weights),) = chosen.items()
        if name in SCENARIOS:
            return resolve_policy(scenario=name)
        return resolve_policy(weights=(weights.performance, weights.cost))
    except ValueError as err:  # RoutingRequestError included
        raise invalid(f"policy {spec[:60]!r}: {err}", "invalid_policy") from err


def is_policy_model(model: str) -> bool:
    """True for the model names that route (``trouter``, ``trouter-<scenario>``, weights)."""
    if model == DEFAULT_MODEL or model in POLICY_MODELS:
        return True
    if not model.startswith(PREFIX) or ":" not in model:
        return False
    try:
        parse_policy(model[len(PREFIX) :])
    except ProxyError:
        return False
    return True


def request_policy(model: str, header: str | None, key_policy: str | None) -> Policy:
    """The policy of a routed request: header, else the model name, else the key's, else
    balanced."""
    if header is not None:
        return parse_policy(header)
    if model != DEFAULT_MODEL:
        return parse_policy(model[len(PREFIX) :])
    return parse_policy(key_policy) if key_policy else resolve_policy()


def max_cost(header: str | None) -> float | None:
    """The per-request budget from ``x-trouter-max-cost-usd``; 400 if it is not a number >= 0."""
    if header is None:
        return None
    try:
        value = float(header)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise invalid(
            f"{MAX_COST_HEADER} must be a number of US dollars >= 0, got {header[:40]!r}",
            "invalid_budget",
        )
    return value


@dataclass(frozen=True)
class TokenEstimate:
    input_tokens: int
    output_tokens: int


def estimate_tokens(raw: dict, input_tokens: int) -> TokenEstimate:
    """Tokens in (estimated by :mod:`.conversation`) and out: the request's cap, else
    :data:`DEFAULT_OUTPUT_TOKENS`, times ``n``."""
    cap = raw.get("max_completion_tokens") or raw.get("max_tokens")
    output = cap if isinstance(cap, int) and cap > 0 else DEFAULT_OUTPUT_TOKENS
    choices = raw.get("n") if isinstance(raw.get("n"), int) and raw["n"] > 0 else 1
    return TokenEstimate(input_tokens, output * choices)


def predicted_cost(endpoint: ModelEndpoint, tokens: TokenEstimate) -> float | None:
    """USD for the estimated call from the pool's prices; None when the model has none."""
    return endpoint.cost(tokens.input_tokens, tokens.output_tokens)


def within_budget(
    candidates: list[str],
    endpoints: dict[str, ModelEndpoint],
    tokens: TokenEstimate,
    budget: float,
    why: str,
) -> list[str]:
    """The candidates whose predicted cost is at most ``budget``, in order; 402 when none.

    A model without a price cannot be shown to fit, so it is left out.
    """
    costs = {name: predicted_cost(endpoints[name], tokens) for name in candidates}
    fitting = [n for n in candidates if costs[n] is not None and costs[n] <= budget]
    if fitting:
        return fitting
    priced = {n: c for n, c in costs.items() if c is not None}
    cheapest = min(priced.items(), key=lambda item: item[1]) if priced else None
    detail = (
        f"the cheapest is {cheapest[0]} at ${cheapest[1]:.6f}" if cheapest else "none is priced"
    )
    raise ProxyError(
        402,
        f"no model fits the budget of ${budget:.6f} ({why}) for about "
        f"{tokens.input_tokens} input and {tokens.output_tokens} output tokens: {detail}",
        "insufficient_budget",
        "budget_exceeded",
    )
