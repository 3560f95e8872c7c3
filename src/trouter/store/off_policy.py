"""Off-policy estimates of "always calling model *a*" from the decision log and the labels.

From the logged decisions alone, using each decision's propensity ``p`` (the probability
with which the logging policy chose the served model) and its feedback score ``r`` (the
mean when several scores arrived):

* ``ips``: ``mean(1[a_i = a] r_i / p_i)``;
* ``dr`` (doubly robust): ``mean(q(x_i, a) + 1[a_i = a] (r_i - q(x_i, a_i)) / p_i)``, where
  ``q`` is the router's logged predicted performance of each model for that query.

A model the logging policy never served (``p`` = 1 for another model) has no IPS support,
and its ``dr`` is then the router's own prediction, biased wherever the router is wrong
(a new task, a changed model). The store's background labels fill that gap: each label is
a full-information row (every pool model's judge score on one served query), so

* ``label_mean``: the mean of the labels' scores for model *a*;
* ``label_dr``: the doubly robust estimate whose ``q(x, a)`` is model *a*'s label mean in
  the query's cell, shrunk towards its overall label mean with the weight of
  :data:`CELL_PRIOR_LABELS` labels (the router's prediction only for a model no label
  scores).

Both are sample estimates with a caveat: the router picks which queries to label (its
active selection favours cells and rivals it is unsure of), not a uniform draw of the
traffic, so a selection that tracks a model's score biases them. Intervals are 95%
percentile bootstraps; ``label_mean`` resamples the labels, ``label_dr`` resamples labels
(refitting ``q``) and decisions together, so its interval carries the direct model's
uncertainty. Only decisions with feedback enter the decision-based estimates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trouter.store.records import Decision

#: the weight, in labels, of a model's overall label mean in its per-cell direct model
CELL_PRIOR_LABELS = 5.0
_NONE = {"mean": None, "low": None, "high": None}  # JSON has no NaN


@dataclass
class Logged:
    """Decisions with feedback as arrays: chosen model index, propensity, reward, the
    predicted performance of every model (NaN where not logged), the router's greedy
    choice (its best predicted utility: what it serves without exploring) and the cell
    (index into ``cells``); beside them the background labels' scores (one row per label,
    NaN where a model has no score) and each label's cell (-1 where its decision is not in
    the window)."""

    models: list[str]
    chosen: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    predicted: np.ndarray
    greedy: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    label_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    label_cell: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))


def logged(decisions: list[Decision], scores: dict[str, float],
           labels: list[tuple[str | None, dict[str, float], float]] = ()) -> Logged:  # fmt: skip
    """The arrays of :class:`Logged` from decisions, their mean feedback ``scores`` and the
    label rows of :meth:`~trouter.store.store.Store.label_rows`."""
    names = {d.model for d in decisions} | {m for d in decisions for m in _predicted(d)}
    names |= {m for d in decisions for m in d.utilities or {}}
    models = sorted(names | {m for _, row, _ in labels for m in row})
    index = {m: j for j, m in enumerate(models)}
    rows = [d for d in decisions if d.request_id in scores]
    predicted = np.full((len(rows), len(models)), np.nan)
    for i, d in enumerate(rows):
        for name, value in _predicted(d).items():
            predicted[i, index[name]] = value
    cells = sorted({d.cell for d in rows}, key=str)
    cell_of = {d.request_id: cells.index(d.cell) for d in decisions if d.cell in cells}
    label_scores = np.full((len(labels), len(models)), np.nan)
    for i, (_, row, _) in enumerate(labels):
        for name, value in row.items():
            label_scores[i, index[name]] = value
    return Logged(
        models,
        np.array([index[d.model] for d in rows], dtype=int),
        np.array([d.propensity for d in rows], dtype=float),
        np.array([scores[d.request_id] for d in rows], dtype=float),
        predicted,
        np.array([index[_greedy(d)] for d in rows], dtype=int),
        np.array([cell_of[d.request_id] for d in rows], dtype=int),
        label_scores,
        np.array([cell_of.get(rid, -1) for rid, _, _ in labels], dtype=int),
    )


def _greedy(d: Decision) -> str:
    """The logged candidate with the best predicted utility (a model with no prediction
    is logged at -inf, which the store reads back as NaN: never the greedy choice)."""
    known = {m: u for m, u in (d.utilities or {}).items() if u is not None and u == u}
    return max(known, key=known.get) if known else d.model


def _predicted(d: Decision) -> dict[str, float]:
    feats = d.features or {}
    if "prior_performance" in feats and "models" in feats:
        return dict(zip(feats["models"], feats["prior_performance"], strict=False))
    return dict(feats.get("performance") or {})


def estimates(log: Logged, a: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision IPS and DR terms of choosing model ``a`` (one index, or one per row)."""
    rows = np.arange(len(log.chosen))
    a = np.broadcast_to(np.asarray(a, dtype=int), log.chosen.shape)
    hit = (log.chosen == a).astype(float)
    ips = hit * log.reward / log.propensity
    fill = np.nanmean(log.reward) if len(log.reward) else 0.0
    q_a = np.nan_to_num(log.predicted[rows, a], nan=fill)
    q_chosen = np.where(
        np.isnan(log.predicted[rows, log.chosen]), q_a, log.predicted[rows, log.chosen]
    )
    dr = q_a + hit * (log.reward - q_chosen) / log.propensity
    return ips, dr


def bootstrap(values: np.ndarray, rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean and 95% percentile-bootstrap interval."""
    if len(values) == 0:
        return dict(_NONE)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high)}


def label_direct_model(log: Logged, picks: np.ndarray | None = None) -> np.ndarray:
    """``q(x_i, a)`` for every scored decision and model from the labels (rows ``picks``
    of them, all by default): the model's label mean in the decision's cell, shrunk towards
    its overall label mean; the router's prediction (else the mean reward) where no label
    scores the model."""
    scores = log.label_scores if picks is None else log.label_scores[picks]
    cell = log.label_cell if picks is None else log.label_cell[picks]
    seen = ~np.isnan(scores)
    values = np.where(seen, scores, 0.0)
    total = seen.sum(axis=0)
    overall = values.sum(axis=0) / np.maximum(total, 1)
    n_cells = int(log.cell.max()) + 1 if len(log.cell) else 0
    slot = np.where(cell >= 0, cell, n_cells)  # labels outside the window: overall only
    sums = np.zeros((n_cells + 1, len(log.models)))
    counts = np.zeros_like(sums)
    np.add.at(sums, slot, values)
    np.add.at(counts, slot, seen)
    table = (sums + CELL_PRIOR_LABELS * overall) / (counts + CELL_PRIOR_LABELS)
    q = table[log.cell] if len(log.cell) else np.zeros((0, len(log.models)))
    fill = np.nanmean(log.reward) if len(log.reward) else 0.0
    router = np.where(np.isnan(log.predicted), fill, log.predicted)
    return np.where(total > 0, q, router)


def label_dr_terms(log: Logged, q: np.ndarray) -> np.ndarray:
    """Per-decision DR terms of every model (decisions x models) with direct model ``q``."""
    rows = np.arange(len(log.chosen))
    residual = (log.reward - q[rows, log.chosen]) / log.propensity
    terms = q.copy()
    terms[rows, log.chosen] += residual
    return terms


def label_estimates(log: Logged, rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``label_mean`` and ``label_dr`` per model and ``label_dr`` of the greedy policy, each
    with its bootstrap interval; all null without labels."""
    m, n_labels, n = len(log.models), len(log.label_scores), len(log.chosen)
    if n_labels == 0:
        blank = {name: {"labels": 0, "label_mean": dict(_NONE), "label_dr": dict(_NONE)}
                 for name in log.models}  # fmt: skip
        return {"per_model": blank, "greedy_dr": dict(_NONE)}
    rng = np.random.default_rng(seed)
    label_means = np.full((rounds, m), np.nan)
    dr_means = np.full((rounds, m), np.nan)
    greedy_means = np.full(rounds, np.nan)
    for k in range(rounds):  # one round at a time: memory stays O(decisions x models)
        picks = rng.integers(0, n_labels, n_labels)
        with np.errstate(invalid="ignore"):
            label_means[k] = _column_means(log.label_scores[picks])
        if n:
            rows = rng.integers(0, n, n)
            terms = label_dr_terms(log, label_direct_model(log, picks))[rows]
            dr_means[k] = terms.mean(axis=0)
            greedy_means[k] = terms[np.arange(n), log.greedy[rows]].mean()
    terms = label_dr_terms(log, label_direct_model(log))
    counts = (~np.isnan(log.label_scores)).sum(axis=0)
    point_label = _column_means(log.label_scores)
    per_model = {}
    for a, name in enumerate(log.models):
        labelled = _interval(point_label[a], label_means[:, a]) if counts[a] else dict(_NONE)
        per_model[name] = {
            "labels": int(counts[a]),
            "label_mean": labelled,
            "label_dr": _interval(terms[:, a].mean(), dr_means[:, a]) if n else dict(_NONE),
        }
    greedy = terms[np.arange(n), log.greedy].mean() if n else np.nan
    return {"per_model": per_model,
            "greedy_dr": _interval(greedy, greedy_means) if n else dict(_NONE)}  # fmt: skip


def _column_means(scores: np.ndarray) -> np.ndarray:
    seen = ~np.isnan(scores)
    return np.where(seen, scores, 0.0).sum(axis=0) / np.where(seen.any(axis=0), seen.sum(0), np.nan)


def _interval(point: float, means: np.ndarray) -> dict[str, float]:
    low, high = np.nanpercentile(means, [2.5, 97.5])
    return {"mean": float(point), "low": float(low), "high": float(high)}


def off_policy(log: Logged, rounds: int = 1000) -> dict[str, Any]:
    """Every estimate per model and for the greedy policy. ``best_single`` is the model
    with the best ``label_dr`` mean among those labelled or served when there are labels,
    else the best ``dr`` mean among those served; ``best_single_by`` names which."""
    from_labels = label_estimates(log, rounds)
    per_model = {}
    for a, name in enumerate(log.models):
        ips, dr = estimates(log, a)
        support = int((log.chosen == a).sum())
        per_model[name] = {
            "support": support,
            # never served: IPS has nothing to weigh, DR is the router's own prediction
            "ips": bootstrap(ips if support else ips[:0], rounds),
            "dr": bootstrap(dr, rounds),
            **from_labels["per_model"][name],
        }
    by = "label_dr" if len(log.label_scores) and len(log.chosen) else "dr"
    known = [m for m, row in per_model.items()
             if row["support"] or (by == "label_dr" and row["labels"])]  # fmt: skip
    best = max(known, key=lambda m: per_model[m][by]["mean"]) if known else None
    ips, dr = estimates(log, log.greedy)
    return {
        "decisions_with_feedback": int(len(log.reward)),
        "label_rows": int(len(log.label_scores)),
        "logged_policy": bootstrap(log.reward, rounds),
        # the current policy without its exploration: the router's greedy choice
        "greedy_policy": {
            "ips": bootstrap(ips, rounds),
            "dr": bootstrap(dr, rounds),
            "label_dr": from_labels["greedy_dr"],
        },
        "best_single": best,
        "best_single_by": by,
        "per_model": per_model,
    }
