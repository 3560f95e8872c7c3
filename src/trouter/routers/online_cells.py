"""How the online router splits the query space (``cell_by``): its cell structure.

Evidence is pooled over all queries, then refined per cell (online_posterior). Three
structures:

* ``kmeans`` (``cells`` k-means cells of the static embedding; 1: one cell, the whole
  stream);
* ``taxonomy``: the leaf of a TRouter's task-type posterior (argmax q(t|x)); the base's own
  when the base is a TRouter, else one fitted on the same rows;
* ``linear``: one cell, plus a ridge regression per model of the residuals on a whitened
  projection (the first ``linear_dims`` principal components of the pool's embeddings),
  with an unpenalised intercept and ``linear_penalty`` (default ``cell_strength``) as the
  penalty, solved from the discounted sums the statistics keep (:func:`linear_correction`).

A mixin of :class:`~trouter.routers.online.OnlineRouter`; its state is arrays (the
centroids, the projection) and, for a TRouter of its own, that router's nested state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.routers.base import Router, make_router
from trouter.routers.cluster import fit_centroids, nearest
from trouter.routers.tuning import embed

CELL_BY = ("kmeans", "taxonomy", "linear")
#: The routers whose task-type posterior can serve as cells.
TAXONOMY_ROUTERS = ("trouter", "trouter+")


def _empty_projection() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)


class QueryCells:
    """The cells of :class:`~trouter.routers.online.OnlineRouter` (see module)."""

    _cell_router: Router | None = None

    def _fit_cells(
        self, train: RoutingDataset, validation: RoutingDataset | None, pool: RoutingDataset
    ) -> int:
        """Fit the cell structure; returns the number of cells (0: one, no per-cell rows)."""
        by, cells = self.params["cell_by"], self.params["cells"]
        self.centroids_ = np.zeros((1, 1), dtype=np.float32)
        self.projection_, self.projection_mean_ = _empty_projection()
        self._cell_router = None
        if by == "taxonomy":
            if self._base is not None and self._base.name in TAXONOMY_ROUTERS:
                self._cell_router = self._base
            else:
                self._cell_router = make_router("trouter", seed=self.seed).fit(train, validation)
            return len(self._cell_router.leaf_ids_)
        if by == "linear":
            self.projection_, self.projection_mean_ = whitened_projection(
                embed(pool, self.encoder), self.params["linear_dims"]
            )
            return 0
        if cells > 1:
            self.centroids_ = fit_centroids(embed(pool, self.encoder), cells, self.seed)
            return len(self.centroids_)
        return 0

    @property
    def linear_dims(self) -> int:
        """Dimensions of the linear cell structure's features (0: not linear)."""
        return len(self.projection_)

    def _cells_of(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Per query: its cell, and (linear structure only) its projected embedding."""
        n, by = len(texts), self.params["cell_by"]
        if not n:
            return np.zeros(0, dtype=int), None
        if by == "taxonomy" and self._cell_router is not None:
            return self._cell_router.posterior(texts).argmax(axis=1), None
        if by == "linear" and self.linear_dims:  # 0: the pool had no spread to project on
            x = embed(texts, self.encoder) - self.projection_mean_
            return np.zeros(n, dtype=int), (x @ self.projection_.T).astype(float)
        if self.params["cells"] > 1:
            return nearest(embed(texts, self.encoder), self.centroids_), None
        return np.zeros(n, dtype=int), None

    # ----- persistence -----------------------------------------------------------------------
    def cells_state(self) -> dict[str, Any]:
        """A TRouter of the cells' own, nested (None: none, or the base serves)."""
        own = self._cell_router is not None and self._cell_router is not self._base
        return {"cell_router_state": self._cell_router.get_state() if own else None}

    def load_cells(self, state: dict[str, Any]) -> None:
        """Restore the cells from :meth:`cells_state` (the base restored first)."""
        nested = state.pop("cell_router_state", None)
        if not hasattr(self, "projection_"):  # saved before the linear structure existed
            self.projection_, self.projection_mean_ = _empty_projection()
        self._cell_router = None
        if self.params["cell_by"] != "taxonomy":
            return
        if nested is None:
            self._cell_router = self._base
        else:
            self._cell_router = make_router("trouter", seed=self.seed)
            self._cell_router.set_state(nested)


def whitened_projection(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(components (d, D), mean (D,)): ``(x - mean) @ components.T`` has unit variance in
    each of the first ``d`` principal directions of ``x``, so that a ridge penalty counts in
    pseudo-observations whatever the encoder's scale."""
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    spread = singular / np.sqrt(max(len(x) - 1, 1))
    d = int(min(dims, int((spread > 1e-6).sum())))
    components = vt[:d] / spread[:d, None]
    return components.astype(np.float32), mean.astype(np.float32)


def linear_correction(stats, x: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Per query and model, the ridge prediction of the (performance, cost) residual's
    deviation from the model's mean residual, from ``stats``' discounted linear sums:
    ``(x - x_bar) @ theta`` (:func:`linear_coefficients`). Shapes (n, m) each; zero for a
    model with no evidence."""
    theta, offset = linear_coefficients(stats, penalty)
    prediction = np.einsum("nd,mdk->nmk", x, theta) - offset[None]
    return prediction[..., 0], prediction[..., 1]


def linear_coefficients(stats, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """(theta (m, d, 2), offset (m, 2)): ``theta = (C_xx + penalty I)^-1 C_xr`` on centred
    sums (an unpenalised intercept) and ``x_bar @ theta``. Solved once per change of the
    sums and cached on ``stats``; the version is read before the sums, so a solve that
    overlaps an update (the learner thread) is filed under the version it outdates."""
    stamp = (stats.linear_version, float(penalty))
    cached = stats.linear_cache
    if cached is not None and cached[0] == stamp:
        return cached[1]
    count = stats.lin_count
    safe = np.maximum(count, 1e-12)[:, None]
    x_bar = stats.lin_x / safe  # (m, d)
    r_bar = stats.lin_r / safe  # (m, 2)
    d = x_bar.shape[1]
    cxx = stats.lin_xx - count[:, None, None] * x_bar[:, :, None] * x_bar[:, None, :]
    cxr = stats.lin_xr - stats.lin_x[:, :, None] * r_bar[:, None, :]  # (m, d, 2)
    theta = np.linalg.solve(cxx + penalty * np.eye(d)[None], cxr)  # (m, d, 2)
    solved = theta, np.einsum("md,mdk->mk", x_bar, theta)
    stats.linear_cache = (stamp, solved)
    return solved
