"""Policies replayed on a stream: the online router, its bandit peers, and fixed choices.

A policy answers ``choose(t)`` (model index, propensity, explored?, label priority) for the
stream's query ``t`` and learns from ``learn(events)``, where an event is a dict with
``id``, ``kind`` (``served`` or ``label``), ``t``, ``row`` (the stream row), and either
``model``/``score``/``cost`` or ``scores``/``costs`` (arrays over the pool, NaN = unseen).
The peers are the published online routers' core rules, on the same embedding:

* ``linucb``: disjoint LinUCB (one ridge regression of utility per model, upper confidence
  bound ``alpha``), on a fixed random 64-d projection of the embedding;
* ``thompson``: prior-free Gaussian Thompson sampling per (k-means cell, model), RoBC-style;
* ``eps-greedy``: per-model running mean utility, a uniformly random model with chance eps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trouter.evaluation.scenarios import Weights
from trouter.routers.online import OnlineRouter, label_priority
from trouter.routers.online_challenge import arm_fields
from trouter.routers.online_labels import label_targets


class FixedPolicy:
    """A choice per stream row decided up front (best-single, oracle, skyline, few-shot)."""

    def __init__(self, choices: np.ndarray) -> None:
        self.choices = np.asarray(choices, dtype=int)

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        return int(self.choices[row]), 1.0, False, 0.0

    def learn(self, events: list[dict[str, Any]]) -> None:
        return None


class OnlinePolicy:
    """The ``online`` router on precomputed features (what a decision record carries)."""

    def __init__(
        self, router: OnlineRouter, features: dict[str, np.ndarray], weights: Weights, seed: int
    ) -> None:
        if ("embedding" in features) != bool(router.linear_dims):
            raise ValueError("features computed for another cell structure than the router's")
        self.router, self.features, self.weights = router, features, weights
        self.rng = np.random.default_rng([seed, 11])
        self.in_flight = 0  # background labels requested and not yet learned from
        self.proposals: dict[int, int] = {}  # stream row -> proposal when it was routed
        self.label_targets: np.ndarray | None = None  # the models the last query's label calls
        self.arms: dict[int, dict[str, Any]] = {}  # stream row -> its served A/B arm, if any

    def _row(self, row: int) -> dict[str, np.ndarray]:
        f = self.features
        keys = ("performance", "cost", "cell", "guard", "embedding")
        return {k: f[k][row : row + 1] for k in keys if k in f}

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        feats = self._row(row)
        made = self.router.decide_features(feats, self.weights, self.rng)
        router, weights, served = self.router, self.weights, int(made.chosen[0])
        priority = float(label_priority(router, feats, made, self.in_flight, weights)[0])
        self.proposals[row] = int(router.proposal(feats, weights, made)[0])
        self.label_targets = label_targets(router, made.chosen, self.in_flight, weights)[0]
        arm = arm_fields(made, 0, weights)
        if arm:
            self.arms[row] = arm
        return served, float(made.propensity[0]), bool(made.explored[0]), priority

    def label_requested(self) -> None:
        self.in_flight += 1

    def learn(self, events: list[dict[str, Any]]) -> None:
        names = self.router.models_
        self.in_flight -= sum(event["kind"] == "label" for event in events)
        converted = []
        for event in events:
            row = event["row"]
            out = {
                "id": event["id"],
                "kind": event["kind"],
                "t": event["t"],
                "cell": int(self.features["cell"][row]),
                "prior_performance": self.features["performance"][row],
                "prior_cost": self.features["cost"][row],
                "base_model": names[int(self.features["guard"][row])],
                "proposal_model": names[self.proposals.get(row, int(self.features["guard"][row]))],
            }
            if "embedding" in self.features:
                out["embedding"] = self.features["embedding"][row]
            if event["kind"] == "label":
                seen = ~np.isnan(event["scores"])
                out["scores"] = {names[j]: event["scores"][j] for j in np.flatnonzero(seen)}
                out["costs"] = {names[j]: event["costs"][j] for j in np.flatnonzero(seen)}
            else:
                out.update(model=names[event["model"]], score=event["score"], cost=event["cost"])
                out.update(self.arms.get(row, {}))
            converted.append(out)
        self.router.partial_fit(converted)


class _UtilityBandit:
    """Shared bookkeeping of the peers: they learn the utility of the served model only."""

    def __init__(self, m: int, weights: Weights, seed: int) -> None:
        self.m, self.weights = m, weights
        self.rng = np.random.default_rng([seed, 13])
        self.available = np.ones(m, dtype=bool)  # arms that may be served (a model can join)

    def add_model(self, model: int) -> None:
        self.available[model] = True

    def _masked(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.available, values, -np.inf)

    def _utility(self, event: dict[str, Any]) -> float:
        return float(self.weights.utility(event["score"], event["cost"]))

    def learn(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["kind"] == "served":
                self.update(event["row"], int(event["model"]), self._utility(event))

    def update(self, row: int, model: int, utility: float) -> None:
        raise NotImplementedError


class EpsilonGreedy(_UtilityBandit):
    def __init__(self, m: int, weights: Weights, seed: int, start: int, eps: float = 0.1):
        super().__init__(m, weights, seed)
        self.eps, self.start = eps, start
        self.count, self.total = np.zeros(m), np.zeros(m)

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        means = np.where(self.count > 0, self.total / np.maximum(self.count, 1), -np.inf)
        greedy = int(np.argmax(self._masked(means))) if self.count.any() else self.start
        arms = np.flatnonzero(self.available)
        if self.rng.random() < self.eps:
            pick = int(arms[self.rng.integers(len(arms))])
            return pick, self.eps / len(arms) + (1 - self.eps) * (pick == greedy), True, 0.0
        return greedy, 1 - self.eps + self.eps / len(arms), False, 0.0

    def update(self, row: int, model: int, utility: float) -> None:
        self.count[model] += 1
        self.total[model] += utility


class ThompsonCells(_UtilityBandit):
    """Gaussian Thompson sampling per (cell, model), no prior beyond a flat one."""

    def __init__(self, m: int, weights: Weights, seed: int, cells: np.ndarray, noise: float = 0.3):
        super().__init__(m, weights, seed)
        self.cells, self.noise = cells, noise
        k = int(cells.max()) + 1 if len(cells) else 1
        self.count, self.total = np.zeros((k, m)), np.zeros((k, m))

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        c = self.cells[row]
        n = self.count[c]
        mean = self.total[c] / (n + 1.0)
        draw = mean + self.rng.standard_normal(self.m) * self.noise / np.sqrt(n + 1.0)
        pick = int(np.argmax(self._masked(draw)))
        return pick, float("nan"), pick != int(np.argmax(self._masked(mean))), 0.0

    def update(self, row: int, model: int, utility: float) -> None:
        c = self.cells[row]
        self.count[c, model] += 1
        self.total[c, model] += utility


class LinUCB(_UtilityBandit):
    """Disjoint LinUCB: per model, ridge regression of utility on the projected embedding."""

    def __init__(self, m: int, weights: Weights, seed: int, x: np.ndarray, alpha: float = 0.5):
        super().__init__(m, weights, seed)
        self.x, self.alpha = x, alpha
        d = x.shape[1]
        self.inverse = np.repeat(np.eye(d)[None], m, axis=0)
        self.b = np.zeros((m, d))

    def choose(self, t: int, row: int) -> tuple[int, float, bool, float]:
        x = self.x[row]
        theta = np.einsum("mij,mj->mi", self.inverse, self.b)
        width = np.sqrt(np.einsum("i,mij,j->m", x, self.inverse, x))
        pick = int(np.argmax(self._masked(theta @ x + self.alpha * width)))
        return pick, 1.0, pick != int(np.argmax(self._masked(theta @ x))), 0.0

    def update(self, row: int, model: int, utility: float) -> None:
        x = self.x[row]
        a = self.inverse[model]
        ax = a @ x
        self.inverse[model] = a - np.outer(ax, ax) / (1.0 + x @ ax)  # Sherman-Morrison
        self.b[model] += utility * x


def projection(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """A fixed random projection to ``dims`` dimensions, plus a constant feature."""
    rng = np.random.default_rng([seed, 17])
    basis = rng.standard_normal((x.shape[1], dims)) / np.sqrt(dims)
    return np.concatenate([x @ basis, np.ones((len(x), 1))], axis=1)
