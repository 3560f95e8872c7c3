"""Cluster router (the Avengers-Pro idea) and the ridge router: two fast, strong baselines.

``cluster``: k-means on the frozen query embeddings of the training rows; each cluster keeps
the mean performance and normalised cost of every pool model over its rows (shrunk towards
the global mean with a pseudo-count, as in :mod:`trouter.routers.metric_router`); a query
gets its nearest cluster's means, so it is routed to the model of best mean utility in its
cluster. LLMRouterBench found this simple scheme among the strongest routers. The number of
clusters and the pseudo-count are chosen on validation, separately for performance and for
cost (the shared criterion of :mod:`trouter.routers.tuning` is their sum).

``ridge``: one ridge regression per pool model and metric from the embedding, in closed form
(an eigendecomposition of the Gram matrix serves every penalty at once), the penalty chosen
on validation per metric. It fits in well under a second, so the guard and ``auto`` can
afford to refit it on many evidence folds.

Learned state of both is numpy arrays and JSON-able numbers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.routers.base import Prediction, Queries, Router, register
from trouter.routers.metric_router import leaf_statistics, shrunk_means
from trouter.routers.tuning import (
    Candidate,
    embed,
    merge,
    select_best,
    targets,
    tuning_split,
    tuning_table,
    validation_terms,
)

METRICS = ("performance", "cost")
DEFAULT_CLUSTERS = (1, 4, 16, 64)
DEFAULT_SHRINKAGES = (0.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def fit_centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centroids (k, d) of unit-norm embeddings (so Euclidean ~ cosine)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    k = max(1, min(int(k), len(x)))
    if k == 1:
        return x.mean(axis=0, keepdims=True).astype(np.float32)
    # one thread: these fits are small, and on a shared CPU extra threads only contend
    with threadpool_limits(1):
        model = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(x)
    return model.cluster_centers_.astype(np.float32)


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid per row."""
    distance = (centroids**2).sum(axis=1)[None, :] - 2.0 * x @ centroids.T
    return distance.argmin(axis=1)


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _per_metric(
    fit_rows: RoutingDataset, val_rows: RoutingDataset, outputs
) -> tuple[dict[str, Candidate[Any]], dict[str, list[dict[str, Any]]]]:
    """Best setting per metric from ``outputs``: (setting, val prediction (n, 2m)) pairs."""
    m = len(fit_rows.models)
    candidates: dict[str, list[Candidate[Any]]] = {metric: [] for metric in METRICS}
    for setting, out in outputs:
        pred = Prediction(fit_rows.model_names, out[:, :m], out[:, m:])
        for metric, loss in zip(METRICS, validation_terms(pred, val_rows), strict=True):
            candidates[metric].append(Candidate(setting, loss))
    best = {metric: select_best(candidates[metric]) for metric in METRICS}
    return best, {metric: tuning_table(candidates[metric]) for metric in METRICS}


@register("cluster")
class ClusterRouter(Router):
    """Per-cluster mean metrics on k-means clusters of the query embedding."""

    def __init__(
        self,
        seed: int = 0,
        n_clusters: Sequence[int] = DEFAULT_CLUSTERS,
        shrinkage: Sequence[float] = DEFAULT_SHRINKAGES,
        refit: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            n_clusters=[int(k) for k in n_clusters],
            shrinkage=[float(s) for s in shrinkage],
            refit=refit,
        )
        if not n_clusters or min(n_clusters) < 1:
            raise ValueError("cluster needs a non-empty list of positive cluster counts")
        if not shrinkage or min(shrinkage) < 0:
            raise ValueError("cluster needs a non-empty list of pseudo-counts >= 0")

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        fit_rows, val_rows = tuning_split(train, validation, self.seed)
        x, xv = embed(fit_rows, self.encoder), embed(val_rows, self.encoder)
        values, mask = targets(fit_rows)

        def outputs():
            for k in sorted(
                {min(k, max(1, len(fit_rows) // 5)) for k in self.params["n_clusters"]}
            ):
                centroids = fit_centroids(x, k, self.seed)
                stats = leaf_statistics(
                    one_hot(nearest(x, centroids), len(centroids)), values, mask
                )
                val_cells = one_hot(nearest(xv, centroids), len(centroids))
                for shrink in self.params["shrinkage"]:
                    setting = {"n_clusters": len(centroids), "shrinkage": shrink}
                    yield setting, val_cells @ shrunk_means(*stats, shrink)

        best, self.tuning_ = _per_metric(fit_rows, val_rows, outputs())
        self.settings_ = {metric: dict(best[metric].params) for metric in METRICS}
        rows = merge(fit_rows, val_rows) if self.params["refit"] else fit_rows
        x_all, (values, mask) = embed(rows, self.encoder), targets(rows)
        m = len(rows.models)
        self.centroids_, self.cell_metrics_ = {}, {}
        for i, metric in enumerate(METRICS):
            cols = slice(i * m, (i + 1) * m)
            setting = self.settings_[metric]
            centroids = fit_centroids(x_all, setting["n_clusters"], self.seed)
            cells = one_hot(nearest(x_all, centroids), len(centroids))
            stats = leaf_statistics(cells, values[:, cols], mask[:, cols])
            self.centroids_[metric] = centroids
            self.cell_metrics_[metric] = shrunk_means(*stats, setting["shrinkage"])
        self.models_ = rows.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        x = embed(queries, self.encoder)
        out = {
            metric: self.cell_metrics_[metric][nearest(x, self.centroids_[metric])]
            for metric in METRICS
        }
        return Prediction(
            list(models), np.clip(out["performance"], 0, 1), np.clip(out["cost"], 0, 1)
        )


def ridge_solutions(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, penalties: Sequence[float]
) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per penalty: (weights (d, j), x mean (d,), y mean (j,)) of a centred ridge fit.

    Each target column uses its observed rows only; columns sharing the same observed rows
    share one eigendecomposition of their Gram matrix.
    """
    d, j = x.shape[1], y.shape[1]
    out = {p: (np.zeros((d, j)), np.zeros((j, d)), np.zeros(j)) for p in penalties}
    patterns: dict[bytes, list[int]] = {}
    for col in range(j):
        patterns.setdefault(np.packbits(mask[:, col]).tobytes(), []).append(col)
    for cols in patterns.values():
        rows = mask[:, cols[0]]
        if not rows.any():
            continue
        xo = x[rows].astype(np.float64)
        x_mean = xo.mean(axis=0)
        xc = xo - x_mean
        yo = y[rows][:, cols].astype(np.float64)
        y_mean = yo.mean(axis=0)
        eigval, eigvec = np.linalg.eigh(xc.T @ xc)
        projected = eigvec.T @ (xc.T @ (yo - y_mean))
        for p in penalties:
            w = eigvec @ (projected / (eigval + p)[:, None])
            out[p][0][:, cols] = w
            out[p][1][cols] = x_mean
            out[p][2][cols] = y_mean
    return out


def ridge_apply(x: np.ndarray, solution: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    w, x_mean, y_mean = solution
    # (x - x_mean_col) @ w_col per column, written as one product plus a per-column offset
    offset = np.einsum("jd,dj->j", x_mean, w)
    return np.clip(x @ w - offset + y_mean, 0.0, 1.0)


@register("ridge")
class RidgeRouter(Router):
    """Closed-form ridge regression of per-model performance and cost on the embedding."""

    def __init__(
        self, seed: int = 0, penalty: Sequence[float] = DEFAULT_PENALTIES, refit: bool = True
    ) -> None:
        super().__init__(seed=seed, penalty=[float(p) for p in penalty], refit=refit)
        if not penalty or min(penalty) <= 0:
            raise ValueError("ridge needs a non-empty list of positive penalties")

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        fit_rows, val_rows = tuning_split(train, validation, self.seed)
        x, xv = embed(fit_rows, self.encoder), embed(val_rows, self.encoder)
        values, mask = targets(fit_rows)
        solutions = ridge_solutions(x, values, mask, self.params["penalty"])
        outputs = (({"penalty": p}, ridge_apply(xv, sol)) for p, sol in solutions.items())
        best, self.tuning_ = _per_metric(fit_rows, val_rows, outputs)
        self.penalty_ = {metric: float(best[metric].params["penalty"]) for metric in METRICS}
        rows = merge(fit_rows, val_rows) if self.params["refit"] else fit_rows
        x_all, (values, mask) = embed(rows, self.encoder), targets(rows)
        m = len(rows.models)
        parts = []
        for i, metric in enumerate(METRICS):
            cols = slice(i * m, (i + 1) * m)
            penalty = self.penalty_[metric]
            parts.append(ridge_solutions(x_all, values[:, cols], mask[:, cols], [penalty])[penalty])
        self.weights_ = np.concatenate([w for w, _, _ in parts], axis=1)
        self.x_mean_ = np.concatenate([x_mean for _, x_mean, _ in parts], axis=0)
        self.y_mean_ = np.concatenate([y_mean for _, _, y_mean in parts])
        self.models_ = rows.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        out = ridge_apply(embed(queries, self.encoder), (self.weights_, self.x_mean_, self.y_mean_))
        m = len(models)
        return Prediction(list(models), out[:, :m], out[:, m:])
