"""The online router's anchor: what it serves until the base has earned its own choices.

Both questions are answered on the background labels alone (full-information rows, so every
comparison is paired on the same queries), discounted like every other statistic:

* :func:`traffic_best_single` - which single model is best *on this traffic*: the training
  rows' best-single, replaced by the labels' best model once the labels show it ahead
  (one-sided at the router's confidence, Bonferroni-corrected for the number of rivals
  (a model that joined late tested at half the error rate, the others at the other half),
  with at least ``min_evidence`` labels). A cold-start
  base's per-query predictions play no part, so a base that is no better than chance cannot
  move it;
* the base's own gain over the anchor, on the same paired tests
  (:mod:`trouter.routers.online_tests`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trouter.evaluation.scenarios import Weights
from trouter.routers.online_posterior import Decisions, decide
from trouter.routers.online_tests import (
    bounds,
    divisors,
    look,
    look_counts,
    paired_gain,
    significant,
)


@dataclass(frozen=True)
class Labels:
    """A consistent snapshot of the background labels (observed and prior, per model)."""

    perf: np.ndarray
    cost: np.ndarray
    prior_perf: np.ndarray
    prior_cost: np.ndarray
    time: np.ndarray
    cell: np.ndarray
    guard: np.ndarray
    proposal: np.ndarray
    embedding: np.ndarray  # (labels, d): the linear cell structure's features (d 0: none)

    def __len__(self) -> int:
        return len(self.time)


def snapshot(router, first: int | None = None) -> Labels:
    """The router's labels (the ``first`` ones only, when given). The learner thread of a
    serving process appends labels while requests read them: each array is replaced, never
    changed in place, so one read of each, cut to the shortest, is consistent."""
    arrays = (
        router.label_perf_, router.label_cost_, router.label_prior_perf_,
        router.label_prior_cost_, router.label_time_, router.label_cell_, router.label_guard_,
        router.label_proposal_, router.label_embedding_,
    )  # fmt: skip
    n = min(len(a) for a in arrays)
    n = n if first is None else min(n, first)
    labels = Labels(*(a[:n] for a in arrays))
    # at each model's current level: labels taken before a shift moved by it (online_drift)
    perf, cost = router.shift_label_arrays(labels.perf, labels.cost, labels.time)
    return replace(labels, perf=perf, cost=cost)


def gains_over(
    labels: Labels,
    weights: Weights,
    reference: int,
    half_life: float | None,
    models: list[int] | None = None,
) -> list[tuple[float, float, float]]:
    """The :func:`paired_gain` in utility over model ``reference`` on ``labels`` of each of
    ``models`` (all: None)."""
    observed = weights.utility(labels.perf, labels.cost)
    models = range(observed.shape[1]) if models is None else models
    return [
        paired_gain(observed[:, j] - observed[:, reference], labels.time, half_life) for j in models
    ]


def prior_favourite(labels: Labels, weights: Weights, reference: int) -> int | None:
    """The rival the base predicts best on the labelled queries (its mean predicted
    utility; the observed scores play no part, so naming it in advance costs no error
    rate), None where no rival has a prediction."""
    if not len(labels):
        return None
    prior = weights.utility(labels.prior_perf, labels.prior_cost)
    counted = (~np.isnan(prior)).sum(axis=0)
    mean = np.where(counted > 0, np.nansum(prior, axis=0) / np.maximum(counted, 1), -np.inf)
    mean[reference] = -np.inf
    best = int(np.argmax(mean))
    return best if np.isfinite(mean[best]) else None


def named_rivals(
    labels: Labels, weights: Weights, reference: int, params: dict, late: np.ndarray | None
) -> np.ndarray:
    """The rivals named in advance, which share half the error rate (:func:`divisors`):
    the models that joined late, else, with ``favourite``, the base's favourite rival (so
    that a newcomer's share of the error rate is the same with it or without)."""
    named = np.zeros(labels.prior_perf.shape[1], dtype=bool)
    if late is not None:
        named |= np.asarray(late, dtype=bool)
    favourite = prior_favourite(labels, weights, reference) if params.get("favourite") else None
    if favourite is not None and not named.any():
        named[favourite] = True
    return named


def traffic_best_single(
    labels: Labels,
    trained: int,
    weights: Weights,
    params: dict,
    late: np.ndarray | None = None,
    own: dict[int, tuple[float, bool]] | None = None,
) -> int:
    """The labels' best model among those that significantly beat ``trained`` (the
    training rows' best-single) on the labelled queries, else ``trained`` (``late``: the
    models that joined since fitting, see :func:`divisors`; ``own``: {model: (mean gain,
    shown ahead)} of models tested on their own looks instead)."""
    own = own or {}
    shown = [(mean, j) for j, (mean, ahead) in own.items() if ahead]
    if len(labels) < params["min_evidence"]:
        return max(shown)[1] if shown else trained
    gains = gains_over(labels, weights, trained, params["half_life"])
    share = divisors(len(gains), trained, named_rivals(labels, weights, trained, params, late))
    # each rival tested at its Bonferroni level, the best mean among those that pass taken
    # (a rival with a few lucky labels must not hide one that is shown ahead on many)
    shown += [
        (gain[0], j)
        for j, gain in enumerate(gains)
        if j != trained and j not in own and significant(gain, params, share[j])
    ]
    return max(shown)[1] if shown else trained


def _rows(own: dict[int, tuple[int, dict]]) -> tuple[tuple[int, int], ...]:
    """(model, labels read) of each own look: what a cached outcome depends on."""
    return tuple((j, rows) for j, (rows, _) in sorted(own.items()))


class AnchorTests:
    """The anchor's part of :class:`~trouter.routers.online.OnlineRouter` (a mixin: it
    reads the router's labels, statistics, rule and parameters, and caches per evidence)."""

    def _memo(self, kind: str, weights: Weights, evidence: int, compute) -> Any:
        """``compute()`` once per (kind, weights) for the current ``evidence`` (a count
        that changes whenever what ``compute`` reads does)."""
        stamp = (evidence, self._drift_version)  # a level shift (online_drift) changes all
        key = (kind, float(weights.performance), float(weights.cost), stamp)
        if key not in self._cached:
            # request threads share this cache: pop, never del, and iterate over a copy
            for old in [k for k in list(self._cached) if k[0] == kind and k[3] != stamp]:
                self._cached.pop(old, None)
            self._cached[key] = compute()
        return self._cached[key]

    def best_single(self, weights: Weights) -> int:
        """The model with the best mean utility on the base's training rows (price prior for a
        model added since, or when the rows lack its scores)."""
        # asked on every decision; it changes only when a model joins or shifts (_memo)
        return self._memo("best", weights, len(self.models_), lambda: self._best_single(weights))

    def _best_single(self, weights: Weights) -> int:
        perf_prior, cost_prior = self.price_prior()
        perf = np.where(np.isnan(self.anchor_performance_), perf_prior, self.anchor_performance_)
        cost = np.where(np.isnan(self.anchor_cost_), cost_prior, self.anchor_cost_)
        utility = weights.utility(*self.shifted_means(perf, cost))
        return int(np.argmax(utility - 1e-12 * cost))

    def anchor_choice(self, weights: Weights) -> int:
        """Best-single on this traffic: the training rows' best-single until the background
        labels show another model ahead of it (with ``anchor_learns``;
        :func:`~trouter.routers.online_anchor.traffic_best_single`)."""
        trained = self.best_single(weights)
        if not self.params["anchor_learns"]:
            return trained
        # labels alone move it: served feedback (most events) leaves it cached
        n, params = look(len(self.label_time_), self.params)
        own = self._own_looks()

        def compute() -> int:
            share = divisors(len(self.models_), trained, self.joined_late_)
            tested = {}
            for j, (rows, at) in own.items():
                gain = self._gain_over(weights, j, trained, rows)
                tested[j] = (gain[0], significant(gain, at, share[j]))
            fresh = traffic_best_single(snapshot(self, n), trained, weights, params,
                                        self.joined_late_, tested)  # fmt: skip
            return fresh if fresh != trained else self._kept_anchor(weights, trained, n)

        return self._memo("anchor", weights, (n, *_rows(own)), compute)

    def _kept(self) -> bool:
        return bool(self.params.get("keep_moves")) and self.params["looks"] == "doubling"

    def _kept_anchor(self, weights: Weights, trained: int, n: int) -> int:
        """With ``keep_moves``, where the look at ``n`` shows no model ahead: the move an
        earlier look made, replayed look by look, each kept while the labels of the next
        look leave it possibly ahead (its upper bound at the unsplit ``confidence`` above
        ``margin``); a move that is ruled out goes back to ``trained``."""
        counts = look_counts(n, self.params) if self._kept() else []
        if len(counts) < 2 or counts[-1] != n:
            return trained
        choice, margin = trained, self.params["margin"]
        for count in counts:  # the look at n itself showed none ahead (the caller's)
            labels, at = snapshot(self, count), look(count, self.params)[1]
            fresh = trained if count == n else traffic_best_single(
                labels, trained, weights, at, self.joined_late_)  # fmt: skip
            if fresh == trained and choice != trained:
                gain = gains_over(labels, weights, trained, at["half_life"], [choice])[0]
                fresh = choice if bounds(gain, self.params)[1] > margin else trained
            choice = fresh
        return choice

    def _own_looks(self) -> dict[int, tuple[int, dict]]:
        """With doubling looks, each model that joined late is tested on its own schedule:
        at doubling counts of the labels that score it (its comparison starts when it
        joins), not at the pool's. {model: (leading labels its look reads, parameters)}."""
        if self.params["looks"] == "every":
            return {}
        out = {}
        for j in np.flatnonzero(np.asarray(self.joined_late_, dtype=bool)):
            scored = np.flatnonzero(~np.isnan(self.label_perf_[:, j]))
            m, at = look(len(scored), {**self.params, "label_plan": None})  # pairs: no plan
            if m:
                out[int(j)] = (int(scored[m - 1]) + 1, at)
        return out

    def _gain_over(self, weights: Weights, j: int, reference: int, rows: int | None = None):
        """:func:`paired_gain` of model ``j`` over ``reference`` on the leading ``rows``
        labels (all: None)."""
        labels = snapshot(self, rows)
        return gains_over(labels, weights, reference, self.params["half_life"], [j])[0]

    def anchor_comparison_open(self, weights: Weights) -> np.ndarray:
        """Per model, whether the labels leave its gain over the anchor open: neither above
        ``margin`` (:func:`significant`) nor ruled out (its upper bound at or below it); for
        label priority, so every rival at the plain Bonferroni level, ``favourite`` or not."""

        n, params = look(len(self.label_time_), self.params)
        own = self._own_looks()

        def compute() -> np.ndarray:
            anchor = self.anchor_choice(weights)
            gains = gains_over(snapshot(self, n), weights, anchor, params["half_life"])
            share = divisors(len(gains), anchor, self.joined_late_)
            out = np.zeros(len(gains), dtype=bool)
            for j, gain in enumerate(gains):
                if j == anchor:
                    continue
                at = params
                if j in own:  # a newcomer, on its own looks
                    rows, at = own[j]
                    gain = self._gain_over(weights, j, anchor, rows)
                shown = significant(gain, at, share[j])
                upper = bounds(gain, at, share[j])[1]
                out[j] = not shown and upper > at["margin"]
            return out

        return self._memo("open", weights, (n, *_rows(own)), compute)

    def base_gain(self, weights: Weights, first: int | None = None) -> tuple[float, float, float]:
        """(mean, standard error, weight) of the utility gain over the anchor of what the
        router would serve without it (the base's choice, or a switch the evidence
        supports: ``proposal_model`` as each label's decision recorded it), paired on the
        background labels (the ``first`` ones, when given; discounted like every
        statistic)."""
        labels = snapshot(self, first)
        if not len(labels):
            return 0.0, np.inf, 0.0
        anchor = self.anchor_choice(weights)
        prior = weights.utility(labels.prior_perf, labels.prior_cost)
        fallback = np.argmax(prior - 1e-12 * labels.prior_cost, axis=1)
        features = {
            "performance": labels.prior_perf,
            "cost": labels.prior_cost,
            "cell": labels.cell.astype(int),
            "guard": np.where(labels.guard >= 0, labels.guard, fallback).astype(int),
        }
        if labels.embedding.shape[1]:
            features["embedding"] = labels.embedding
        # each label's proposal as recorded before it was learned (out of sample); the
        # current one where none was recorded (in sample: optimistic)
        current = decide(self.stats_, features, weights, self.rule).exploit
        proposal = np.where(labels.proposal >= 0, labels.proposal, current).astype(int)
        observed = weights.utility(labels.perf, labels.cost)
        rows = np.arange(len(proposal))
        diff = observed[rows, proposal] - observed[rows, anchor]
        return paired_gain(diff, labels.time, self.params["half_life"])

    def _base_gain_at_look(self, weights: Weights) -> tuple[tuple[float, float, float], dict, int]:
        """:meth:`base_gain` on the labels the tests read now, the parameters they run at
        and the count read: computed once per look (with ``looks="every"``, once per event:
        any event may change the fallback proposals) and weights, for both tests below."""
        n, params = look(len(self.label_time_), self.params)
        stamp = len(self._seen) if self.params["looks"] == "every" else n
        return self._memo("base-gain", weights, stamp,
                          lambda: (self.base_gain(weights, n), params, n))  # fmt: skip

    def base_earned(self, weights: Weights) -> bool:
        """Whether the background labels show, one-sided at ``confidence``, that the base's
        choice beats the anchor (and the base may then serve, and switch, as it would)."""
        gain, params, n = self._base_gain_at_look(weights)
        shown = significant(gain, params)
        if shown or not self._kept():
            return shown
        return self._memo("base-kept", weights, n, lambda: self._base_kept(weights, n, gain))

    def _base_kept(self, weights: Weights, n: int, gain_now: tuple) -> bool:
        """With ``keep_moves``: whether an earlier look passed the base and every look since
        leaves its gain possibly above ``margin`` (as :meth:`_kept_anchor`; ``gain_now``:
        the gain the look at ``n`` read)."""
        earned = False
        for count in look_counts(n, self.params):
            gain = gain_now if count == n else self.base_gain(weights, count)
            at = look(count, self.params)[1]
            passed = significant(gain, at)
            earned = passed or (earned and bounds(gain, self.params)[1] > self.params["margin"])
        return earned

    def base_ruled_out(self, weights: Weights) -> bool:
        """Whether the background labels show, one-sided at ``confidence``, that the base's
        choice does not beat the anchor by more than ``margin`` (its upper bound at or
        below it): served traffic need not be spent on testing it (online_challenge)."""
        gain, params, n = self._base_gain_at_look(weights)
        return n >= params["min_evidence"] and bounds(gain, params)[1] <= params["margin"]

    def proposal(self, features: dict[str, np.ndarray], weights: Weights, made: Decisions):
        """What the router would serve with the anchor lifted (``made``: its decisions)."""
        if self.params["anchor"] != "best-single" or self.earned(weights):
            return made.exploit
        if made.proposal is not None:  # the served A/B test's draw computed it already
            return made.proposal
        return decide(self.stats_, features, weights, self.rule).exploit
