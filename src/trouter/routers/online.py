"""``online``: a router that starts from a fitted base and learns from live traffic, safely.

It wraps any fitted router (its *base*: ``auto``, a cold-start ``trouter``, ...; or none)
and keeps, per cell of the query space and pool model, discounted statistics of how far
observed outcomes fall from what the base predicted (:mod:`online_stats`). Two kinds of
events feed them, through :meth:`OnlineRouter.partial_fit`:

* ``served``: ``{"id", "kind": "served", "t", "model", "score", "cost"?}`` - bandit feedback,
  only the served model's outcome;
* ``label``: ``{"id", "kind": "label", "t", "scores": {model: score}, "costs"?: {...}}`` - a
  background label: several models called on the same query, never served.

Each event also carries the query's features as the decision recorded them
(``"prior_performance"``, ``"prior_cost"``: the base prediction per model in pool order, and
``"cell"``) or, failing that, the ``"query"`` text, from which they are recomputed. Events are
idempotent by ``id``; late, out-of-order and repeated events give the same state, because
discounting (``half_life``, in units of ``t``) is by event time. Costs are normalised costs
in [0, 1], as in every :class:`Prediction`; a missing cost is taken as predicted.

Serving (:mod:`online_posterior`) is guarded: with no evidence the router serves what its
base serves, and it switches only when the posterior gain is significant. Exploration
(``explore``) and the served A/B test (``challenge``: online_challenge) are off by default.
A model whose quality or price changes is re-ranked from its own observations
(``drift_z``: online_drift). :meth:`decide` returns every decision with its propensity and
whether the query deserves a background label (:func:`label_priority`; the caller's
:class:`~trouter.routers.online_labels.LabelBudget` decides whether to spend one).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import (
    Forced,
    Prediction,
    Queries,
    Router,
    make_router,
    query_texts,
    register,
)
from trouter.routers.online_anchor import AnchorTests
from trouter.routers.online_cells import CELL_BY, QueryCells
from trouter.routers.online_challenge import ChallengeTests, arm_fields
from trouter.routers.online_drift import LevelShifts
from trouter.routers.online_events import EventLearning
from trouter.routers.online_labels import label_priority, label_targets
from trouter.routers.online_posterior import Decisions, Rule, decide
from trouter.routers.online_recent import RecentFeatures
from trouter.routers.online_stats import EvidenceStats
from trouter.routers.tuning import merge

#: What is served with no evidence: ``best-single`` (the pool's best model on the base's
#: training rows; the base's choice must earn its way in with evidence) or ``base``.
ANCHORS = ("best-single", "base")
#: When the anchor's and the base's tests look at the labels: at ``doubling`` label counts
#: with the error rate split over the looks (online_tests.look; safer on every validation
#: suite), or after ``every`` label at the full rate (learns faster on RouterBench).
LOOKS = ("every", "doubling")
#: The decision rule's parameters, read from the router's.
RULE_FIELDS = tuple(f.name for f in fields(Rule))
#: Utility tilt of the price prior (no base): a pricier model is assumed slightly better.
PRICE_TILT = 0.1


def _check(p: dict[str, Any]) -> None:
    """Refuse parameters the router cannot run with, naming them (NaN fails every test)."""
    for name, allowed in (("anchor", ANCHORS), ("looks", LOOKS), ("cell_by", CELL_BY)):
        if p[name] not in allowed:
            raise ValueError(f"online {name} must be one of {allowed}, got {p[name]!r}")
    if min(p["cells"], p["linear_dims"]) < 1 or not 0.5 <= p["confidence"] < 1:
        raise ValueError("online needs cells >= 1, linear_dims >= 1, confidence in [0.5, 1)")
    share, margin, explore = p["challenge"], p["challenge_margin"], p["explore"]
    if not (0 <= share <= 0.5 and 0 <= explore <= 0.5 and margin >= 0):
        raise ValueError(f"online challenge and explore must be in [0, 0.5] and challenge_margin "
                         f">= 0, got {share}, {explore}, {margin}")  # fmt: skip
    limits = {k: p[k] for k in ("half_life", "drift_z", "label_plan")}
    bad = {k: v for k, v in limits.items() if v is not None and not v > 0}
    if bad:
        raise ValueError(f"online {', '.join(bad)} must be > 0 or None, got {bad}")


@register("online")
class OnlineRouter(EventLearning, AnchorTests, ChallengeTests, LevelShifts, QueryCells, Router):
    """A posterior per (cell, model) around a base router's predictions (see module)."""

    default_encoder = "static"

    def __init__(
        self,
        seed: int = 0,
        base: str = "auto",
        base_params: dict[str, Any] | None = None,
        cells: int = 1,
        cell_by: str = "kmeans",
        linear_dims: int = 32,
        linear_penalty: float | None = None,
        half_life: float | None = None,
        prior_strength: float = 10.0,
        cell_strength: float = 20.0,
        confidence: float = 0.9,
        margin: float = 0.0,
        min_evidence: float = 8.0,
        explore: float = 0.0,
        explore_max_loss: float = 0.02,
        explore_floor: float = 0.2,
        label_min: int = 10,
        label_cell_min: int = 3,
        label_pair_max: int = 40,
        anchor: str = "best-single",
        anchor_learns: bool = True,
        favourite: bool = False,
        student_t: bool = False,
        looks: str = "doubling",
        first_look: float | None = None,
        label_plan: float | None = None,
        keep_moves: bool = False,
        challenge: float = 0.0,
        challenge_margin: float = 0.1,
        drift_z: float | None = 4.5,
        **params: Any,
    ) -> None:
        super().__init__(
            seed=seed,
            base=str(base),
            base_params=dict(base_params or {}),
            cells=int(cells),
            cell_by=str(cell_by),
            linear_dims=int(linear_dims),
            linear_penalty=None if linear_penalty is None else float(linear_penalty),
            half_life=None if half_life is None else float(half_life),
            prior_strength=float(prior_strength),
            cell_strength=float(cell_strength),
            confidence=float(confidence),
            margin=float(margin),
            min_evidence=float(min_evidence),
            explore=float(explore),
            explore_max_loss=float(explore_max_loss),
            explore_floor=float(explore_floor),
            label_min=int(label_min),
            label_cell_min=int(label_cell_min),
            label_pair_max=int(label_pair_max),
            anchor=str(anchor),
            anchor_learns=bool(anchor_learns),
            favourite=bool(favourite),
            student_t=bool(student_t),
            looks=str(looks),
            first_look=None if first_look is None else float(first_look),
            label_plan=None if label_plan is None else float(label_plan),
            keep_moves=bool(keep_moves),
            challenge=float(challenge),
            challenge_margin=float(challenge_margin),
            drift_z=None if drift_z is None else float(drift_z),
            **params,
        )
        _check(self.params)
        self._base: Router | None = None
        self._seen: set[str] = set()
        self._cached: dict[tuple[str, float, float, int], Any] = {}  # see _memo
        self._recent = RecentFeatures()  # the last queries' features (online_recent)
        self._init_drift(0)

    @property
    def rule(self) -> Rule:
        p = self.params
        return Rule(**{k: p[k] for k in RULE_FIELDS if k in p})

    # ----- fitting -----------------------------------------------------------------------
    @classmethod
    def around(
        cls,
        base: Router,
        train: RoutingDataset,
        validation: RoutingDataset | None = None,
        **params: Any,
    ) -> OnlineRouter:
        """An online router around an already fitted ``base`` (fitted on ``train``)."""
        router = cls(base=base.name, base_params=dict(base.params), seed=base.seed, **params)
        router._base = base
        return router.fit(train, validation)

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        pool = merge(train, validation) if validation is not None and len(validation) else train
        if self._base is None and self.params["base"] != "none":
            self._base = make_router(
                self.params["base"], seed=self.seed, **self.params["base_params"]
            ).fit(train, validation)
        self.models_ = list(pool.model_names)
        self.pool_performance_ = np.nanmean(pool.performance, axis=0)
        self.pool_cost_ = np.nanmean(pool.normalised_cost, axis=0)
        # the anchor is the ``best-single`` router's model: training rows only
        self.anchor_performance_ = np.nanmean(train.performance, axis=0)
        self.anchor_cost_ = np.nanmean(train.normalised_cost, axis=0)
        cells = self._fit_cells(train, validation, pool)
        m = len(self.models_)
        self.stats_ = EvidenceStats(cells, m, self.params["half_life"], self.linear_dims)
        self.seen_ids_: list[str] = []
        self.skipped_events_ = 0
        self._seen: set[str] = set()
        self._cached, self._recent = {}, RecentFeatures()
        self._init_challenge()
        # the labels kept (online_anchor.Labels): per model, then one value per label
        for name in ("label_perf_", "label_cost_", "label_prior_perf_", "label_prior_cost_"):
            setattr(self, name, np.zeros((0, m)))
        for name in ("label_time_", "label_cell_", "label_guard_", "label_proposal_"):
            setattr(self, name, np.zeros(0))
        self.label_embedding_ = np.zeros((0, self.linear_dims))
        self.joined_late_ = np.zeros(m)  # 1: added by add_model, after fitting
        self._init_drift(m)
        return self

    def add_model(self, name: str, cost: float) -> None:
        """A new pool model with normalised price ``cost``: its prior comes from the price and
        the pool's shared mean, and label proposals include it first (it has none)."""
        models = self._require_fitted()
        if name in models:
            raise ValueError(f"model {name!r} is already in the pool")
        models.append(name)
        self.pool_performance_ = np.append(self.pool_performance_, np.nan)
        self.pool_cost_ = np.append(self.pool_cost_, float(cost))
        self.anchor_performance_ = np.append(self.anchor_performance_, np.nan)
        self.anchor_cost_ = np.append(self.anchor_cost_, float(cost))
        self.joined_late_ = np.append(self.joined_late_, 1.0)
        perf_prior, cost_prior = self.price_prior()
        for name, fill in (
            ("label_perf_", np.nan),
            ("label_cost_", np.nan),
            ("label_prior_perf_", perf_prior[-1]),
            ("label_prior_cost_", cost_prior[-1]),
        ):
            array = getattr(self, name)
            setattr(self, name, np.pad(array, ((0, 0), (0, 1)), constant_values=fill))
        self._cached, self._recent = {}, RecentFeatures()
        self.stats_.add_model()
        self._drift_add_model()

    # ----- features: the base's prediction and the cell of each query --------------------
    def price_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-model (performance, cost) expected with no base: one shared mean, tilted by
        price, and the price itself."""
        shared = float(np.nanmean(self.pool_performance_))
        cost = np.nan_to_num(self.pool_cost_, nan=float(np.nanmean(self.pool_cost_)))
        return shared + PRICE_TILT * (cost - cost.mean()), cost

    def features(self, queries: Queries, weights: Weights | None = None) -> dict[str, np.ndarray]:
        """Per query: prior performance and cost (n, m), cell, and (with ``weights``) the
        guard: the base's own choice (the best price-prior model with no base), which
        :meth:`decide_features` replaces by the anchor until the base has earned it."""
        feats, base_prediction, known = self._prior_features(query_texts(queries))
        if weights is None:
            return feats
        return self._guarded(feats, base_prediction, known, weights)

    def _prior_features(self, texts: list[str]) -> tuple[dict, Prediction | None, list[int]]:
        """The weight-free features (guard -1), the base's prediction over the pool models it
        knows, and their pool indices."""
        models = self._require_fitted()
        n = len(texts)
        if n == 1 and (seen := self._recent.get(texts[0])) is not None:
            return seen  # routed a moment ago: the proxy's draw decides it again
        perf_prior, cost_prior = self.price_prior()
        perf, cost = np.tile(perf_prior, (n, 1)), np.tile(cost_prior, (n, 1))
        prediction, known = None, []
        if self._base is not None and n:
            known = [j for j, name in enumerate(models) if name in self._base.models_]
            prediction = self._base.predict(texts).reorder([models[j] for j in known])
            perf[:, known] = np.asarray(prediction.performance)
            cost[:, known] = np.asarray(prediction.cost)
        cells, embedding = self._cells_of(texts)
        feats = {"performance": perf, "cost": cost, "cell": cells}
        if embedding is not None:
            feats["embedding"] = embedding
        feats["guard"] = np.full(n, -1)
        self._recent.put(texts, feats, prediction, known)
        return feats, prediction, known

    def _guarded(
        self,
        feats: dict[str, np.ndarray],
        base_prediction: Prediction | None,
        known: list[int],
        weights: Weights,
    ) -> dict[str, np.ndarray]:
        """``feats`` with the base's guarded choice for ``weights``."""
        n = len(feats["cell"])
        guard = np.full(n, -1)
        if base_prediction is not None:
            guard = np.asarray(known)[base_prediction.choose(weights)]
        if (guard < 0).any():
            utility = weights.utility(feats["performance"], feats["cost"])
            guard = np.where(guard < 0, np.argmax(utility, axis=1), guard)
        return {**feats, "guard": guard}

    # ----- decisions ----------------------------------------------------------------------
    def decide_features(
        self,
        features: dict[str, np.ndarray],
        weights: Weights,
        rng: np.random.Generator | None = None,
    ) -> Decisions:
        """Decisions for queries whose :meth:`features` were computed with ``weights``."""
        if (features["guard"] < 0).any():
            raise ValueError("features were computed without weights; pass weights to features()")
        if self.params["anchor"] == "best-single" and not self.earned(weights):
            # the base has not shown a gain over best-single: serve the anchor, no switches
            # (the per-query switches lean on the base's predictions, not yet trusted), but
            # for the served A/B test's share (online_challenge)
            anchor = self.anchor_choice(weights)
            anchored = {**features, "guard": np.full(len(features["guard"]), anchor)}
            rule = replace(self.rule, min_evidence=np.inf)
            made = decide(self.stats_, anchored, weights, rule, rng)
            return self.challenged(made, features, weights, anchor, rng)
        return decide(self.stats_, features, weights, self.rule, rng)

    def decide(
        self, queries: Queries, weights: Weights, rng: np.random.Generator | None = None
    ) -> list[dict[str, Any]]:
        """One decision record per query: model, propensity, probabilities, exploration flag,
        label priority and the features a later event needs (see :meth:`partial_fit`)."""
        models = self._require_fitted()
        feats = self.features(queries, weights)
        made = self.decide_features(feats, weights, rng)
        priority = label_priority(self, feats, made, weights=weights)
        proposal = self.proposal(feats, weights, made)
        targets = label_targets(self, made.chosen, weights=weights)
        return [
            {
                "model": models[int(made.chosen[i])],
                "propensity": float(made.propensity[i]),
                "probabilities": dict(zip(models, made.probabilities[i].tolist(), strict=True)),
                "explored": bool(made.explored[i]),
                "label_priority": float(priority[i]),
                "label_models": [name for name, t in zip(models, targets[i], strict=True) if t],
                "cell": int(feats["cell"][i]),
                "base_model": models[int(feats["guard"][i])],
                "proposal_model": models[int(proposal[i])],
                "prior_performance": feats["performance"][i].tolist(),
                "prior_cost": feats["cost"][i].tolist(),
                **({"embedding": feats["embedding"][i].tolist()} if "embedding" in feats else {}),
                **arm_fields(made, i, weights),
            }
            for i in range(len(made.chosen))
        ]

    def predict(self, queries: Queries) -> Prediction:
        """Posterior mean performance and cost; the guarded decision (no exploration) as the
        override, so that ``route`` serves exactly what :meth:`decide` exploits."""
        models = self._require_fitted()
        # the base predicts once; each weights' override only reads its choice
        feats, base_prediction, known = self._prior_features(query_texts(queries))
        stats, total = self.stats_, self.stats_.total
        n0 = self.params["prior_strength"]
        count = stats.count[total]
        perf = feats["performance"] + stats.sum_perf[total] / (n0 + count)
        cost = feats["cost"] + stats.sum_cost[total] / (n0 + count)

        def override(weights: Weights) -> Forced:
            guarded = self._guarded(feats, base_prediction, known, weights)
            made = self.decide_features(guarded, weights)
            reasons = [
                "online: the default" if keep else "online: posterior gain over the default"
                for keep in (made.exploit == made.guard).tolist()
            ]
            return Forced(made.exploit, reasons)

        return Prediction(
            list(models), np.clip(perf, 0, 1), np.clip(cost, 0, 1), override, list(models),
            extras=self.logged_prior(feats),
        )  # fmt: skip

    # ----- persistence: statistics as arrays, the base nested ------------------------------
    def get_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k.endswith("_") and k != "stats_"}
        state["stats_"] = self.stats_.to_state()
        state["base_state"] = None if self._base is None else self._base.get_state()
        return {**state, **self.drift_state(), **self.cells_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        base_state = state.pop("base_state")
        cells = {"cell_router_state": state.pop("cell_router_state", None)}
        self.stats_ = EvidenceStats.from_state(state.pop("stats_"), self.params["half_life"])
        state.setdefault("label_proposal_", np.full(len(state["label_time_"]), -1.0))
        state.setdefault("joined_late_", np.zeros(len(state["models_"])))
        state.setdefault("label_embedding_", np.zeros((len(state["label_time_"]), 0)))
        self._init_challenge()  # saved before the served A/B test existed: no arms yet
        drift = {k: state.pop(k) for k in list(state) if k.startswith("drift_")}
        self.__dict__.update(state)
        self.models_ = list(self.models_)
        self.load_drift(drift)
        self.seen_ids_ = list(self.seen_ids_)
        self._seen = set(self.seen_ids_)
        self._cached, self._recent = {}, RecentFeatures()
        self._base = None
        if base_state is not None:
            base_params = self.params["base_params"]
            self._base = make_router(self.params["base"], seed=self.seed, **base_params)
            self._base.set_state(base_state)
        self.load_cells(cells)
