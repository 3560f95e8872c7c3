"""The online router's events: what a decision logs for them, ``partial_fit``, and how a
label is kept.

A mixin of :class:`~trouter.routers.online.OnlineRouter` (it reads and updates the router's
statistics, labels and seen ids); the event format is the router module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class EventLearning:
    """``partial_fit`` of :class:`~trouter.routers.online.OnlineRouter` (see its module)."""

    def logged_prior(self, feats: dict[str, np.ndarray]) -> dict[str, Any]:
        """What a decision keeps of :meth:`features` for its served event: the models, the
        prior (float32: seven digits are far finer than any prediction, and halve the
        logged text), the cell and the linear cells' features, one row per query."""
        logged = {"models": list(self.models_), "cell": feats["cell"]}
        for key, name in (("performance", "prior_performance"), ("cost", "prior_cost"),
                          ("embedding", "embedding")):  # fmt: skip
            if key in feats:
                logged[name] = np.asarray(feats[key], dtype=np.float32)
        return logged

    def seen(self, event_id: str) -> bool:
        """Whether an event of this id has been applied (events are idempotent by id)."""
        return str(event_id) in self._seen

    def partial_fit(self, events: Iterable[dict[str, Any]]) -> EventLearning:
        """Apply events (see module); an id seen before, or an unknown model, is skipped."""
        models = self._require_fitted()
        fresh = [e for e in events if str(e["id"]) not in self._seen]
        missing = [e for e in fresh if "prior_performance" not in e]
        if missing:
            feats = self.features([str(e["query"]) for e in missing])
            for i, event in enumerate(missing):  # filled in place: recomputed once only
                event["prior_performance"] = feats["performance"][i]
                event["prior_cost"] = feats["cost"][i]
                event["cell"] = int(feats["cell"][i])
                if "embedding" in feats:
                    event["embedding"] = feats["embedding"][i]
        index = {name: j for j, name in enumerate(models)}
        touched: set[int] = set()
        for event in fresh:
            key = str(event["id"])
            if key in self._seen:  # repeated within this batch
                continue
            self._seen.add(key)
            self.seen_ids_.append(key)
            cell = int(event.get("cell", 0)) if self.stats_.total > 0 else 0
            weight = self.stats_.weight(float(event.get("t", 0.0)))
            x = self._linear_features(event)
            if event.get("kind", "served") == "label":
                perf = self._prior_vector(event["prior_performance"], 0)
                cost = self._prior_vector(event["prior_cost"], 1)
                touched |= self._apply_label(event, index, perf, cost, cell, weight, x)
            elif event["model"] in index:
                j = index[event["model"]]
                perf_j = self._prior_at(event["prior_performance"], j, 0)
                prior_cost_j = self._prior_at(event["prior_cost"], j, 1)
                observed_cost = event.get("cost")  # missing: as predicted
                cost_j = prior_cost_j if observed_cost is None else float(observed_cost)
                score = float(event["score"])
                self.stats_.add(cell, j, score - perf_j, cost_j - prior_cost_j, weight, x)
                seen_cost = np.nan if observed_cost is None else cost_j
                self._observe_served(
                    j, event.get("t", 0.0), score - perf_j, seen_cost, prior_cost_j
                )
                touched.add(j)
                if "ab_arm" in event:
                    self._learn_arm(event, score, cost_j, weight)
            else:
                self.skipped_events_ += 1
        self._detect_drift(touched)
        return self

    def _linear_features(self, event: dict[str, Any]) -> np.ndarray | None:
        """The event's features for the linear cell structure, as its decision recorded
        them (None: not linear, or not recorded: the event feeds the other statistics)."""
        given = event.get("embedding")
        if not self.stats_.dims or given is None:
            return None
        try:
            x = np.asarray(given, dtype=float)
        except (TypeError, ValueError):  # not numbers: the event feeds the rest
            return None
        return x if x.shape == (self.stats_.dims,) and np.isfinite(x).all() else None

    def _prior_at(self, values: Sequence[float], j: int, which: int) -> float:
        """Model ``j``'s recorded prior, or its price prior for a model added since."""
        return float(values[j]) if j < len(values) else float(self.price_prior()[which][j])

    def _prior_vector(self, values: Sequence[float], which: int) -> np.ndarray:
        """A recorded prior vector, completed from the price prior if the pool has grown."""
        if len(values) == len(self.models_):
            return np.asarray(values, dtype=float)
        out = np.array(self.price_prior()[which], dtype=float)
        given = np.asarray(values, dtype=float)[: len(out)]
        out[: len(given)] = given
        return out

    def _apply_label(self, event, index, perf, cost, cell, weight, x=None) -> set[int]:
        """Keep one label; returns the models it observed."""
        m = len(index)
        scores, costs = np.full(m, np.nan), np.full(m, np.nan)
        for name, score in event["scores"].items():
            if name in index:
                scores[index[name]] = float(score)
        for name, value in (event.get("costs") or {}).items():
            if name in index and value is not None:
                costs[index[name]] = float(value)
        observed = ~np.isnan(scores)
        if not observed.any():
            self.skipped_events_ += 1
            return set()
        cost_residual = np.where(np.isnan(costs), 0.0, costs - cost)
        self.stats_.add_full(cell, scores - perf, cost_residual, observed, weight, x)
        # a label without recorded features keeps the pool's mean (0), as in the sums it is not
        features = np.zeros(self.stats_.dims) if x is None else x
        self.label_embedding_ = np.vstack([self.label_embedding_, features[None, :]])
        self.label_perf_ = np.vstack([self.label_perf_, scores])
        self.label_cost_ = np.vstack([self.label_cost_, np.where(np.isnan(costs), cost, costs)])
        self.label_prior_perf_ = np.vstack([self.label_prior_perf_, perf])
        self.label_prior_cost_ = np.vstack([self.label_prior_cost_, cost])
        self.label_time_ = np.append(self.label_time_, float(event.get("t", 0.0)))
        self.label_cell_ = np.append(self.label_cell_, cell)
        self.label_guard_ = np.append(self.label_guard_, index.get(event.get("base_model"), -1))
        proposal = index.get(event.get("proposal_model"), -1)
        self.label_proposal_ = np.append(self.label_proposal_, proposal)
        self._cached = {}
        return self._observe_label(float(event.get("t", 0.0)), scores - perf, costs, cost)
