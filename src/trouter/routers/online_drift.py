"""Level shifts: a pool model whose quality or price changes on this traffic.

Discounting (``half_life``) re-learns a changed model only slowly, and the anchor's tests
on the background labels need dozens of labels for a gain of the size a change opens. A
change shows sooner in the model's own observations: its served feedback (every served
query, for the model the anchor serves) and, for a price, a few labels, as costs are near
deterministic. So per model the router keeps its latest observations on this traffic in two
channels (:data:`CHANNELS`): served residuals (score minus predicted performance; log of
observed over predicted cost) and label residuals taken relative to the other models on the
same query. In each it looks for one change point: the split in time that maximises the
two-sample z of the mean after against before it (pooled variance; observations older than
the window are kept as one summary block at the start; served costs on their ranks). Past
``drift_z``, a stringent level because the split is the best of many, the change is kept
with the level before it, and the model's level has shifted by the level since the change
minus that one.

A shift is applied wherever the router compares models on evidence older than the change:
the training means from which the anchor's best-single is chosen, and the background labels
taken before it. A model whose scores fell, or whose price dropped, is then re-ranked after
a few dozen served queries or a few labels, with no test on noisy utility differences. A
shift is measured against the model's own earlier level on the same traffic, so traffic
that is harder or cheaper than the training rows for every model is not a shift.

The logs hold the events applied sorted by time, whatever order they arrived in, and the
search runs after each batch of events, off the request path, once per 1/32 of a model's
observations. A change once found is kept, so the shifts depend on when the searches ran:
replaying the event log in its order rebuilds them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.stats import rankdata

#: Observations kept per model; older ones are summed into one block.
WINDOW = 1024
#: (min observations before, min after, variance floor, on ranks, z above ``drift_z``) of a
#: change point, per measure and channel. Performance residuals are noisy per query. Cost
#: ratios are near deterministic, but a served model is seen on every query, where answer
#: lengths spread widely (code) and the search runs at every few answers: served costs are
#: searched on their ranks (a Mann-Whitney z, whatever the tails), with 30 after a split and
#: a z 1.5 higher (a random order of one RouterBench stream reached 4.66 on 59 answers, a
#: permutation p of 0.0006 over ten looks). The sparse labels' costs, relative to the
#: other models on the query, need 5 after a split.
SPLITS = {
    "served": ((30, 30, 0.01, False, 0.0), (30, 30, 0.01, True, 1.5)),
    "label": ((30, 30, 0.01, False, 0.0), (8, 5, 0.01, False, 0.0)),
}
#: A price change counts only from this factor on (log): smaller ones are answer lengths.
MIN_PRICE_CHANGE = float(np.log(1.5))
#: Summary block per model: (count, sum, sum of squares) of perf, then of cost, the latest
#: time summed, the start of the latest perf and cost change found (inf: none), and the
#: perf and cost level before the first change (NaN: none; kept, as the observations
#: before it leave the window).
SUMMARY = 11
#: Cost floor in the log ratio (normalised costs may be 0).
COST_FLOOR = 1e-6


@dataclass(frozen=True)
class Shifts:
    """Per model: performance shift and its start time (inf: none), cost factor and its
    start time."""

    perf: np.ndarray
    perf_since: np.ndarray
    cost: np.ndarray
    cost_since: np.ndarray

    @classmethod
    def none(cls, m: int) -> Shifts:
        return cls(np.zeros(m), np.full(m, np.inf), np.ones(m), np.full(m, np.inf))

    @property
    def any(self) -> bool:
        return bool(np.isfinite(self.perf_since).any() or np.isfinite(self.cost_since).any())


def change_point(
    times: np.ndarray, values: np.ndarray, summary: np.ndarray, split: tuple[int, int, float]
) -> tuple[float, float, float]:
    """(|z|, shift, start time) of the best split of ``values`` (sorted by ``times``, NaN
    skipped), with ``summary`` (count, sum, sum of squares) of older values before them;
    (0, 0, inf) when no split has enough observations on each side."""
    keep = ~np.isnan(values)
    times, values = times[keep], values[keep]
    n, (min_before, min_after, floor) = len(values), split
    base_n, base_sum, base_sq = (float(v) for v in summary)
    if n < min_after or base_n + n < min_before + min_after:
        return 0.0, 0.0, np.inf
    sums = base_sum + np.concatenate(([0.0], np.cumsum(values)))
    squares = base_sq + np.concatenate(([0.0], np.cumsum(values * values)))
    k = np.arange(n + 1)
    before = base_n + k
    after = n - k
    ok = (before >= min_before) & (after >= min_after)
    if not ok.any():
        return 0.0, 0.0, np.inf
    k, before, after = k[ok], before[ok], after[ok]
    mean_before = sums[k] / before
    mean_after = (sums[-1] - sums[k]) / after
    within = (squares[k] - before * mean_before**2) + (
        squares[-1] - squares[k] - after * mean_after**2
    )
    variance = np.maximum(within / np.maximum(before + after - 2, 1), floor)
    z = (mean_after - mean_before) / np.sqrt(variance * (1 / before + 1 / after))
    best = int(np.argmax(np.abs(z)))
    return float(abs(z[best])), float(mean_after[best] - mean_before[best]), float(times[k[best]])


class ModelLog:
    """One model's latest observations, sorted by time, and the summary of older ones."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.rows = np.empty((3, 2 * WINDOW))  # time, perf residual, cost log ratio
        self.n = 0
        self.summary = np.zeros(SUMMARY)
        self.summary[6:] = (-np.inf, np.inf, np.inf, np.nan, np.nan)
        self.pending = 0  # observations added since the last search
        self.outcome = (0.0, np.inf, 1.0, np.inf)

    def add(self, t: float, perf: float, cost: float) -> None:
        self.pending += 1
        if t < self.summary[6]:  # older than the window: straight into the summary
            self._sum(np.array([[t], [perf], [cost]]))
            return
        at = int(np.searchsorted(self.rows[0, : self.n], t, side="right"))
        self.rows[:, at + 1 : self.n + 1] = self.rows[:, at : self.n]
        self.rows[:, at] = (t, perf, cost)
        self.n += 1
        if self.n == self.rows.shape[1]:
            spill = self.n - WINDOW
            self._sum(self.rows[:, :spill])
            self.rows[:, :WINDOW] = self.rows[:, spill : self.n].copy()
            self.n = WINDOW

    def _sum(self, rows: np.ndarray) -> None:
        for offset, values in ((0, rows[1]), (3, rows[2])):
            values = values[~np.isnan(values)]
            self.summary[offset : offset + 3] += (len(values), values.sum(), (values**2).sum())
        self.summary[6] = max(self.summary[6], float(rows[0].max()))

    def detect(self, threshold: float, force: bool = False) -> tuple[float, float, float, float]:
        """(perf shift, since, cost factor, since): no shift (0 or 1, inf) until one passes
        ``threshold``. The search runs once per n/32 new observations (a served model's
        log is searched every few dozen queries, a labelled one at every label), unless
        ``force``d."""
        if not force and self.pending < max(1, self.n // 32):
            return self.outcome
        self.pending = 0
        times, perf, cost = self.rows[:, : self.n]
        perf_split, cost_split = SPLITS[self.channel]
        summary = self.summary
        perf_shift, summary[7], summary[9] = _level(
            times, perf, summary[0:3], perf_split, threshold, summary[7], summary[9]
        )
        cost_shift, summary[8], summary[10] = _level(
            times, cost, summary[3:6], cost_split, threshold, summary[8], summary[10], robust=True
        )
        self.outcome = (perf_shift, self.summary[7], float(np.exp(cost_shift)), self.summary[8])
        return self.outcome


def _level(
    times: np.ndarray,
    values: np.ndarray,
    summary: np.ndarray,
    split: tuple[int, int, float, bool, float],
    threshold: float,
    since: float,
    before: float,
    robust: bool = False,
) -> tuple[float, float, float]:
    """(shift, since, level before) of one measure. A change once found is kept (its start
    time latched: after the switch it causes, the changed model is seldom observed, and a z
    that drifted back under the threshold would switch back), and so is the level before it;
    later observations are searched for a newer one. The shift is the level since the
    latest change minus the level before the first. ``robust`` (costs): levels are medians,
    and a change needs a shift of at least :data:`MIN_PRICE_CHANGE` (one long answer among
    a few is no new price)."""
    latched = np.isfinite(since)
    start = int(np.searchsorted(times, since, side="left")) if latched else 0
    base = np.zeros(3) if latched else summary
    searched = values[start:]
    if not latched and base[0] + len(searched) < split[0] + split[1]:
        return 0.0, np.inf, np.nan  # too few to split (NaN counted: a bound, not the count)
    if split[3]:  # ranks within the searched part (older, summed values have none)
        searched, base = _ranks(searched), np.zeros(3)
    z, _, found = change_point(times[start:], searched, base, split[:3])
    if z > threshold + split[4]:
        k = int(np.searchsorted(times, found, side="left"))
        level = before if latched else _level_of(values[:k], summary, robust)
        shift = _level_of(values[k:], None, robust) - level
        if np.isfinite(shift) and (not robust or abs(shift) >= MIN_PRICE_CHANGE):
            since, before = found, level
    if not np.isfinite(since):
        return 0.0, np.inf, np.nan
    after = _level_of(values[int(np.searchsorted(times, since, side="left")) :], None, robust)
    return (float(after - before) if np.isfinite(after) else 0.0), since, before


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1] of the values (NaN kept; ties share their mean rank)."""
    out = np.full(len(values), np.nan)
    ok = ~np.isnan(values)
    if ok.sum() > 1:
        out[ok] = (rankdata(values[ok]) - 1.0) / (ok.sum() - 1)
    return out


def _level_of(values: np.ndarray, summary: np.ndarray | None, robust: bool) -> float:
    """Mean of the values and of the ``summary``'s (count, sum, ...) (``robust``: the
    median of the values alone); NaN where there are none."""
    values = values[~np.isnan(values)]
    if robust:
        return float(np.median(values)) if len(values) else np.nan
    count = len(values) + (summary[0] if summary is not None else 0.0)
    total = values.sum() + (summary[1] if summary is not None else 0.0)
    return float(total / count) if count else np.nan


#: Where a model's observations come from: its served feedback (residuals against the
#: prior) and the background labels (each model's residual against the other models' on
#: the same query, so that a harder or longer mix of queries is no shift).
CHANNELS = ("served", "label")
#: The share of the pool a label must score to count: each value is relative to the other
#: models scored, so labels of a few models (a newcomer's pairs) are another reference.
FULL_LABEL = 0.8


def label_values(
    residuals: np.ndarray, costs: np.ndarray, prior_costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One label's per-model values, relative to the other models on the same query:
    performance residual minus the mean of the others' (NaN: not scored), log cost ratio
    minus the median over the models (one model's price change does not move it)."""
    scored = ~np.isnan(residuals)
    n = scored.sum()
    total = np.nansum(residuals)
    perf = np.full(len(residuals), np.nan)
    if n > 1:
        perf[scored] = residuals[scored] - (total - residuals[scored]) / (n - 1)
    ratios = _log_ratio(costs, prior_costs)
    cost = ratios - np.nanmedian(ratios) if (~np.isnan(ratios)).sum() > 1 else ratios * np.nan
    return perf, cost


def _log_ratio(cost, prior_cost):
    cost, prior_cost = np.asarray(cost, dtype=float), np.asarray(prior_cost, dtype=float)
    return np.log((cost + COST_FLOOR) / (np.maximum(prior_cost, 0.0) + COST_FLOOR))


class LevelShifts:
    """The level-shift part of :class:`~trouter.routers.online.OnlineRouter` (a mixin: it
    keeps one :class:`ModelLog` per channel and pool model, and the current
    :class:`Shifts`)."""

    def _init_drift(self, m: int) -> None:
        self._logs = {channel: [ModelLog(channel) for _ in range(m)] for channel in CHANNELS}
        self.shifts = Shifts.none(m)
        self._drift_version = 0

    def _observe_served(self, j: int, t: float, perf_residual: float, cost, prior_cost) -> None:
        """Model ``j`` served at ``t`` (``cost`` NaN: not observed)."""
        if self.params.get("drift_z") is None:  # level shifts off: nothing to keep
            return
        ratio = float(_log_ratio(cost, prior_cost))
        self._logs["served"][j].add(float(t), float(perf_residual), ratio)

    def _observe_label(self, t: float, residuals, costs, prior_costs) -> set[int]:
        """One background label (per model: score minus prior, NaN where not scored);
        returns the models it observed."""
        if self.params.get("drift_z") is None:
            return set()
        scored = int((~np.isnan(residuals)).sum())
        if scored < max(3, int(np.ceil(FULL_LABEL * len(residuals)))):
            return set()  # a pair label (a newcomer's): another reference, not comparable
        perf, cost = label_values(residuals, costs, prior_costs)
        seen = np.flatnonzero(~np.isnan(perf) | ~np.isnan(cost))
        for j in seen:
            self._logs["label"][int(j)].add(float(t), float(perf[j]), float(cost[j]))
        return {int(j) for j in seen}

    def _detect_drift(self, touched: set[int], force: bool = False) -> None:
        """Re-run the change-point search for the models observed since the last batch. A
        shift the labels show wins over one in served feedback (it is paired)."""
        threshold = self.params.get("drift_z")
        if not touched or threshold is None:
            return
        perf, perf_since = self.shifts.perf.copy(), self.shifts.perf_since.copy()
        cost, cost_since = self.shifts.cost.copy(), self.shifts.cost_since.copy()
        for j in touched:
            served = self._logs["served"][j].detect(threshold, force)
            labelled = self._logs["label"][j].detect(threshold, force)
            perf[j], perf_since[j] = labelled[:2] if np.isfinite(labelled[1]) else served[:2]
            cost[j], cost_since[j] = labelled[2:] if np.isfinite(labelled[3]) else served[2:]
        new = Shifts(perf, perf_since, cost, cost_since)
        if any(not np.array_equal(getattr(new, f.name), getattr(self.shifts, f.name))
               for f in fields(Shifts)):  # fmt: skip
            self.shifts = new  # replaced, never changed in place: request threads read it
            self._drift_version += 1

    def _drift_add_model(self) -> None:
        for channel, logs in self._logs.items():
            logs.append(ModelLog(channel))
        s = self.shifts
        self.shifts = Shifts(np.append(s.perf, 0.0), np.append(s.perf_since, np.inf),
                             np.append(s.cost, 1.0), np.append(s.cost_since, np.inf))  # fmt: skip
        self._drift_version += 1

    def shifted_means(self, perf: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training means (per model) moved by the shifts detected since."""
        s = self.shifts
        return perf + s.perf, cost * s.cost

    def shift_label_arrays(
        self, perf: np.ndarray, cost: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Label scores and costs as they would read at each model's current level: the
        labels taken before a model's shift moved by it (copies; the inputs are shared)."""
        s = self.shifts
        if not s.any or not len(times):
            return perf, cost
        before_perf = times[:, None] < s.perf_since[None, : perf.shape[1]]
        before_cost = times[:, None] < s.cost_since[None, : cost.shape[1]]
        perf = np.where(before_perf, perf + s.perf[None, : perf.shape[1]], perf)
        cost = np.where(before_cost, cost * s.cost[None, : cost.shape[1]], cost)
        return perf, cost

    # ----- persistence: the logs as arrays ----------------------------------------------
    def drift_state(self) -> dict[str, np.ndarray]:
        state = {}
        for channel, logs in self._logs.items():
            rows = [log.rows[:, : log.n] for log in logs]
            state[f"drift_{channel}_rows_"] = (
                np.concatenate(rows, axis=1) if rows else np.zeros((3, 0))
            )
            state[f"drift_{channel}_counts_"] = np.array([log.n for log in logs], dtype=float)
            state[f"drift_{channel}_summary_"] = np.array([log.summary for log in logs]).reshape(
                -1, SUMMARY
            )
        return state

    def load_drift(self, state: dict) -> None:
        """The logs from :meth:`drift_state` (none saved: empty logs), shifts recomputed."""
        m = len(self.models_)
        self._init_drift(m)
        for channel, logs in self._logs.items():
            rows = state.get(f"drift_{channel}_rows_")
            counts = state.get(f"drift_{channel}_counts_")
            summary = state.get(f"drift_{channel}_summary_")
            if rows is None or counts is None or summary is None:
                continue
            start = 0
            for j, count in enumerate(np.asarray(counts, dtype=int)):
                logs[j].rows[:, :count] = rows[:, start : start + count]
                logs[j].n, logs[j].summary = int(count), np.array(summary[j], dtype=float)
                start += count
        self._detect_drift(set(range(m)), force=True)
