"""The replay loop of ``trouter eval --setting online``: one policy served a stream.

The policy is asked for a model per query and for a label priority; the budget decides
whether the query gets a background label (the models the policy asks for, scored); served
feedback and labels reach the policy ``Feedback.delay`` queries later, a ``Feedback.rate``
share of the served ones with a score, a ``Feedback.noise`` share of scores wrong.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.scenarios import Weights
from trouter.routers.online_labels import LabelBudget, label_cost


@dataclass
class Feedback:
    """How served outcomes reach the policy: the share that carries a score, the share of
    those (and of labels) whose score is wrong (a 0/1 score flipped, else redrawn uniformly),
    and the delay in queries."""

    rate: float = 1.0
    noise: float = 0.0
    delay: int = 0


def _noisy(score: float, noise: float, rng: np.random.Generator) -> float:
    if noise <= 0 or np.isnan(score) or rng.random() >= noise:
        return score
    return 1.0 - score if score in (0.0, 1.0) else float(rng.random())


def replay(
    policy,
    stream: RoutingDataset,
    order: np.ndarray,
    weights: Weights,
    feedback: Feedback,
    budget: LabelBudget | None,
    seed: int,
    arrival: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Serve ``stream`` rows in ``order``; events reach ``policy`` ``feedback.delay`` later.
    ``arrival`` (query, model): the model joins the pool there (``policy.add_model``)."""
    rng = np.random.default_rng([seed, 19])
    perf, cost = stream.performance, stream.normalised_cost
    n = len(order)
    chosen, explored = np.zeros(n, int), np.zeros(n, bool)
    called = np.zeros((n, perf.shape[1]), bool)  # the models each background label called
    available = None if arrival is None else np.arange(perf.shape[1]) != arrival[1]
    propensity = np.zeros(n)
    pending: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for t, row in enumerate(order):
        if arrival is not None and t == arrival[0]:
            available = None
            if hasattr(policy, "add_model"):
                policy.add_model(arrival[1])
        if t in pending:
            policy.learn(pending.pop(t))
        model, propensity[t], explored[t], priority = policy.choose(t, row)
        chosen[t] = model
        events = []
        pool = np.ones(perf.shape[1], bool) if available is None else available
        targets = getattr(policy, "label_targets", None)
        targets = pool if targets is None else targets
        if budget is not None and budget.take(t, priority, label_cost(targets, model, pool.sum())):
            called[t] = targets
            if hasattr(policy, "label_requested"):
                policy.label_requested()
            scores = np.array([_noisy(s, feedback.noise, rng) for s in perf[row]])
            scores[~targets] = np.nan
            events.append(
                {
                    "id": f"l{t}",
                    "kind": "label",
                    "t": t,
                    "row": row,
                    "scores": scores,
                    "costs": cost[row].copy(),
                }
            )
        if rng.random() < feedback.rate:
            score = _noisy(float(perf[row, model]), feedback.noise, rng)
            events.append(
                {
                    "id": f"s{t}",
                    "kind": "served",
                    "t": t,
                    "row": row,
                    "model": model,
                    "score": score,
                    "cost": float(cost[row, model]),
                }
            )
        if events:
            pending[t + 1 + feedback.delay].extend(events)
    return {"chosen": chosen, "explored": explored, "labelled": called.any(axis=1),
            "label_called": called, "propensity": propensity}  # fmt: skip
