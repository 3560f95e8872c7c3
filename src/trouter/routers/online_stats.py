"""Sufficient statistics of the online router: discounted sums, updated in microseconds.

Every observation is a *residual*: the observed performance and normalised cost of a model
minus what the prior (the base router) predicted for that query. Per (cell, model) the
statistics keep the discounted count and sums of residuals and of their squares.
Full-information rows (background labels, where several models were scored on the same
query) also feed per *pair* of models the moments of the residual differences, so that two
models can be compared paired, which is far tighter than comparing two independent means;
a pair counts only the rows where both were scored, so a model added later pairs cleanly.

Discounting is by event time, not arrival order: an event at time ``t`` carries weight
``2 ** ((t - now) / half_life)``. The sums are kept relative to a reference time that only
moves forward (rescaling everything when it does), so the state after a set of events is
the same whatever order they arrived in. Row ``cells`` (the last) of every per-cell array
holds the totals over all cells.

With ``dims`` > 0 (the linear cell structure, online_cells) each model also keeps the
discounted sums a ridge regression of its residuals on the query's ``dims`` features needs:
count, sum of x, of x x^T, of the (performance, cost) residuals and of x times them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Arrays of the state, with their shape as a function of (cells + 1, models).
FIELDS = ("count", "sum_perf", "sum_cost", "sq_perf", "sq_cost", "label_count")
#: Per pair of models (m, m): count, sums of the perf and cost residual differences, of their
#: squares and of their product.
PAIR_FIELDS = ("pair_count", "pair_dp", "pair_dc", "pair_dpp", "pair_dcc", "pair_dpc")
#: Policies (weights) whose served A/B arms are kept (online_challenge), and per arm (control,
#: treat) the moments [count, perf, cost, perf^2, cost^2, perf*cost] of served outcomes.
MAX_POLICIES, ARM_MOMENTS = 8, 6
#: Per model, the linear structure's sums: (m,), (m, d), (m, d, d), (m, 2), (m, d, 2).
LINEAR_FIELDS = ("lin_count", "lin_x", "lin_xx", "lin_r", "lin_xr")


class EvidenceStats:
    """Discounted residual statistics for ``cells`` cells (plus a total row) and ``m`` models."""

    def __init__(self, cells: int, m: int, half_life: float | None = None, dims: int = 0) -> None:
        self.half_life = half_life
        self.reference_time = 0.0
        rows = cells + 1
        self.count = np.zeros((rows, m))
        self.sum_perf = np.zeros((rows, m))
        self.sum_cost = np.zeros((rows, m))
        self.sq_perf = np.zeros((rows, m))
        self.sq_cost = np.zeros((rows, m))
        self.label_count = np.zeros((rows, m))
        for name in PAIR_FIELDS:
            setattr(self, name, np.zeros((m, m)))
        self.arms = np.zeros((MAX_POLICIES, 2, ARM_MOMENTS))
        self.dims = int(dims)
        self.lin_count, self.lin_x = np.zeros(m), np.zeros((m, dims))
        self.lin_xx, self.lin_r = np.zeros((m, dims, dims)), np.zeros((m, 2))
        self.lin_xr = np.zeros((m, dims, 2))
        # bumped after every change of the linear sums (a rescale included: the ridge penalty
        # does not scale with them), so that their solution is solved once per change
        self.linear_version = 0
        self.linear_cache: tuple[Any, Any] | None = None

    @property
    def models(self) -> int:
        return self.count.shape[1]

    @property
    def total(self) -> int:
        """Index of the row of totals over all cells."""
        return self.count.shape[0] - 1

    # ----- time ----------------------------------------------------------------------------
    def weight(self, t: float) -> float:
        """The weight of an event at time ``t``, moving the reference forward if it is new."""
        if self.half_life is None:
            return 1.0
        if t > self.reference_time:
            scale = 2.0 ** (-(t - self.reference_time) / self.half_life)
            for name in (*FIELDS, *PAIR_FIELDS, *LINEAR_FIELDS, "arms"):
                getattr(self, name).__imul__(scale)
            self.reference_time = float(t)
            self.linear_version += 1
        return 2.0 ** ((t - self.reference_time) / self.half_life)

    # ----- updates -------------------------------------------------------------------------
    def add(
        self,
        cell: int,
        model: int,
        perf_residual: float,
        cost_residual: float,
        weight: float,
        x: np.ndarray | None = None,
    ) -> None:
        """One model's observed (served) residuals on one query (``x``: its linear features)."""
        if x is not None and self.dims:
            self._add_linear(np.array([model]), x, np.array([[perf_residual, cost_residual]]),
                             weight)  # fmt: skip
        for row in (cell, self.total) if cell != self.total else (cell,):
            self.count[row, model] += weight
            self.sum_perf[row, model] += weight * perf_residual
            self.sum_cost[row, model] += weight * cost_residual
            self.sq_perf[row, model] += weight * perf_residual * perf_residual
            self.sq_cost[row, model] += weight * cost_residual * cost_residual

    def add_full(
        self,
        cell: int,
        perf_residual: np.ndarray,
        cost_residual: np.ndarray,
        observed: np.ndarray,
        weight: float,
        x: np.ndarray | None = None,
    ) -> None:
        """A full-information row: every observed model's residuals on the same query."""
        seen = observed * weight
        if x is not None and self.dims:
            models = np.flatnonzero(observed)
            residuals = np.stack([perf_residual[models], cost_residual[models]], axis=1)
            self._add_linear(models, x, np.nan_to_num(residuals), weight)
        perf, cost = np.nan_to_num(perf_residual), np.nan_to_num(cost_residual)
        rows = [cell, self.total] if cell != self.total else [cell]
        self.count[rows] += seen
        self.label_count[rows] += seen
        self.sum_perf[rows] += seen * perf
        self.sum_cost[rows] += seen * cost
        self.sq_perf[rows] += seen * perf * perf
        self.sq_cost[rows] += seen * cost * cost
        both = np.outer(observed, observed) * weight
        dp = np.nan_to_num(perf_residual[:, None] - perf_residual[None, :])
        dc = np.nan_to_num(cost_residual[:, None] - cost_residual[None, :])
        self.pair_count += both
        self.pair_dp += both * dp
        self.pair_dc += both * dc
        self.pair_dpp += both * dp * dp
        self.pair_dcc += both * dc * dc
        self.pair_dpc += both * dp * dc

    def _add_linear(
        self, models: np.ndarray, x: np.ndarray, residuals: np.ndarray, weight: float
    ) -> None:
        """The linear sums of ``models`` for one query with features ``x``."""
        x = np.asarray(x, dtype=float)[: self.dims]
        self.lin_count[models] += weight
        self.lin_x[models] += weight * x
        self.lin_xx[models] += weight * np.outer(x, x)
        self.lin_r[models] += weight * residuals
        self.lin_xr[models] += weight * x[None, :, None] * residuals[:, None, :]
        self.linear_version += 1

    def add_model(self) -> None:
        """Room for one more pool model (no evidence yet)."""
        for name in FIELDS:
            array = getattr(self, name)
            setattr(self, name, np.pad(array, ((0, 0), (0, 1))))
        for name in LINEAR_FIELDS:
            array = getattr(self, name)
            setattr(self, name, np.pad(array, [(0, 1)] + [(0, 0)] * (array.ndim - 1)))
        for name in PAIR_FIELDS:
            setattr(self, name, np.pad(getattr(self, name), ((0, 1), (0, 1))))
        self.linear_version += 1

    # ----- persistence ---------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name) for name in FIELDS + PAIR_FIELDS}
        state["arms"] = self.arms
        if self.dims:
            state.update({name: getattr(self, name) for name in LINEAR_FIELDS})
        state["reference_time"] = float(self.reference_time)
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], half_life: float | None) -> EvidenceStats:
        count = np.asarray(state["count"], dtype=float)
        dims = np.asarray(state["lin_x"]).shape[1] if "lin_x" in state else 0
        stats = cls(count.shape[0] - 1, count.shape[1], half_life, dims)
        for name in FIELDS + PAIR_FIELDS:
            setattr(stats, name, np.array(state[name], dtype=float))
        if "arms" in state:  # saved before the A/B arms existed: none
            stats.arms = np.array(state["arms"], dtype=float)
        for name in LINEAR_FIELDS if dims else ():
            setattr(stats, name, np.array(state[name], dtype=float))
        stats.reference_time = float(state["reference_time"])
        return stats
