"""Spending a background-labelling budget: which routed queries get every model called.

A :class:`LabelBudget` holds a number of labels that may be spent within the first
``window`` queries (``None``: no end), or accrues ``rate`` labels per 1,000 queries. It asks
nothing of the router but a priority per query (:func:`label_priority`, below):

* ``active`` spends a label on a query whose priority is at least ``threshold`` (a model
  or cell short of labels, or overlapping posteriors), and on every query once the queries
  left in the window are no more than the labels left, so the budget is spent in time;
* ``random`` is uniform selection sampling: each query is labelled with probability
  (labels left) / (queries left in the window), so exactly the budget is spent, uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from trouter.evaluation.scenarios import Weights
from trouter.routers.online_posterior import Decisions

if TYPE_CHECKING:  # the router imports this module
    from trouter.routers.online import OnlineRouter

MODES = ("active", "random")


@dataclass
class LabelBudget:
    total: int | None = None
    window: int | None = None
    rate: float | None = None
    mode: str = "active"
    threshold: float = 1.0
    seed: int = 0
    used: float = 0.0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"label selection must be one of {MODES}, got {self.mode!r}")
        if (self.total is None) == (self.rate is None):
            raise ValueError("a label budget is a total (with an optional window) or a rate")
        if self.mode == "random" and self.total is not None and self.window is None:
            raise ValueError("random label selection over a total needs a window (queries)")
        self._rng = np.random.default_rng([self.seed, 7])

    def allowance(self, t: int) -> float:
        """Labels that may have been spent by the time query ``t`` (0-based) is routed."""
        if self.rate is not None:
            return self.rate * (t + 1) / 1000.0
        if self.window is not None and t >= self.window:
            return float(self.used)
        return float(self.total)

    def take(self, t: int, priority: float, cost: float = 1.0) -> bool:
        """Whether query ``t`` gets a background label (and if so, count it). ``cost``: its
        share of a full label (the models it calls over the pool's other models), so that a
        label of a few models spends the budget in proportion to its calls."""
        left = self.allowance(t) - self.used
        if left < cost - 1e-9:  # fractional costs add up with rounding error
            return False
        if self.mode == "random":
            per_query = self.rate / 1000.0 if self.rate is not None else None
            chance = per_query if per_query is not None else left / max(self.window - t, 1)
            taken = bool(self._rng.random() < chance)
        else:
            closing = self.window is not None and self.window - t <= left
            taken = priority >= self.threshold or closing
        self.used += cost * taken
        return taken


def parse_budget(spec: str, stream_length: int) -> tuple[int, int | None]:
    """``25/500`` -> 25 labels within the first 500 queries; ``100`` -> 100 over the stream;
    ``0`` -> none. Returns (total, window)."""
    text = str(spec).strip()
    head, sep, tail = text.partition("/")
    try:
        total = int(head)
        window = int(tail) if sep else stream_length
    except ValueError:
        raise ValueError(
            f"label budget {spec!r} is not N or N/WINDOW (e.g. 25/500: 25 labels in the first "
            "500 queries)"
        ) from None
    if total < 0 or window < 1:
        raise ValueError(f"label budget {spec!r} needs N >= 0 and WINDOW >= 1")
    return total, window


def parse_rate(spec: str) -> float | None:
    """``25per1000`` -> 25 labels per 1,000 queries, accruing over the stream (a serving
    budget: labels stay available for a model or a change that comes late); None if
    ``spec`` is not a rate."""
    head, sep, tail = str(spec).strip().partition("per")
    if not sep:
        return None
    try:
        labels, queries = float(head), float(tail)
    except ValueError:
        raise ValueError(f"label rate {spec!r} is not NperM (e.g. 25per1000)") from None
    if labels < 0 or queries <= 0:
        raise ValueError(f"label rate {spec!r} needs N >= 0 and M > 0")
    return 1000.0 * labels / queries


def budget_for(spec: str, stream_length: int, mode: str, seed: int) -> LabelBudget | None:
    """The budget ``spec`` means on a stream (``N``, ``N/WINDOW`` or ``NperM``; None: no
    labels)."""
    rate = parse_rate(spec)
    if rate is not None:
        return LabelBudget(rate=rate, mode=mode, seed=seed) if rate > 0 else None
    total, window = parse_budget(spec, stream_length)
    if total == 0:
        return None
    return LabelBudget(total=total, window=min(window, stream_length), mode=mode, seed=seed)


def budget_size(spec: str, stream_length: int) -> int:
    """How many labels ``spec`` allows over a whole stream."""
    rate = parse_rate(spec)
    if rate is not None:
        return int(rate * stream_length / 1000.0)
    return parse_budget(spec, stream_length)[0]


def label_priority(
    router: OnlineRouter,
    features: dict[str, np.ndarray],
    made: Decisions,
    in_flight: int = 0,
    weights: Weights | None = None,
) -> np.ndarray:
    """How much a background label of each query is worth, in [0, 3]:

    3 while some pool model is short of labels (fewer than ``label_min``, or, given
    ``weights``, a model added since fitting whose comparison with the anchor is still
    open: :func:`newcomers_open`); 2 while the query's cell has fewer than ``label_cell_min``;
    otherwise the chance that a rival beats the served model, doubled (1 = even odds: the
    posteriors overlap). ``in_flight`` labels (requested, not yet arrived) count as arrived
    for the first two rules, so that late labels are not requested again and again for the
    same shortage."""
    stats, p = router.stats_, router.params
    labels = stats.label_count
    priority = 2.0 * np.clip(made.overlap, 0.0, 1.0)
    if stats.total > 0:
        cell_short = labels[features["cell"]].min(axis=1) + in_flight < p["label_cell_min"]
        priority = np.where(cell_short, 2.0, priority)
    short = labels[stats.total] + in_flight < p["label_min"]
    if short.any() or newcomers_open(router, in_flight, weights).any():
        priority = np.full_like(priority, 3.0)
    return priority


def newcomers_open(
    router: OnlineRouter, in_flight: int = 0, weights: Weights | None = None
) -> np.ndarray:
    """Per pool model, whether it was added since fitting and its gain over the anchor is
    still open (neither shown nor ruled out by the labels), with fewer than
    ``label_pair_max`` labels (in flight included). Needs ``weights`` (else none is)."""
    late = np.asarray(router.joined_late_, dtype=bool)
    if weights is None or not late.any():
        return np.zeros(len(late), dtype=bool)
    counts = router.stats_.label_count[router.stats_.total]
    room = counts + in_flight < router.params["label_pair_max"]
    return late & room & router.anchor_comparison_open(weights)


def label_targets(
    router: OnlineRouter, served: np.ndarray, in_flight: int = 0, weights: Weights | None = None
) -> np.ndarray:
    """Per query, the models a background label calls (True) and judges with the served
    answer (``served``: each query's served model): every model, except while a newcomer's
    comparison with the anchor is open (:func:`newcomers_open`): then the newcomers alone,
    paired with the anchor and the served model, so that a newcomer is compared with the
    incumbent at one call per label instead of the whole pool's. Shape (queries, models)."""
    served = np.asarray(served, dtype=int)
    m = len(router.models_)
    newcomers = newcomers_open(router, in_flight, weights)
    if not newcomers.any():
        return np.ones((len(served), m), dtype=bool)
    targets = np.tile(newcomers, (len(served), 1))
    targets[:, router.anchor_choice(weights)] = True
    targets[np.arange(len(served)), served] = True
    return targets


def label_cost(targets: np.ndarray, served: int, pool: int | None = None) -> float:
    """A label's share of a full one: the models it calls besides the served one, over the
    other models of the pool (``pool`` models available; default: all of ``targets``)."""
    pool = len(targets) if pool is None else pool
    calls = int(targets.sum()) - int(bool(targets[served]))
    return calls / max(pool - 1, 1)
