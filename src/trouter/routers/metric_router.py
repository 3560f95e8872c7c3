"""MetricRouter: type the query by taxonomy similarity, predict the task type's average metrics.

The paper's task-type baseline, without any learned parameters: each query is assigned to
the taxonomy's difficulty leaves by embedding similarity (:func:`assign_leaves`); each leaf
gets the mean performance and normalised cost, per model, of the training rows assigned to
it; a query's prediction is the mix of its leaves' metrics under its assignment. It shows
how far the task type *alone* carries routing, which is what TRouter's decoders see too.

Leaves that few training rows reach have noisy means, so each leaf mean is shrunk towards
the model's global mean with a pseudo-count ``shrinkage`` (empirical-Bayes style):
``(sum of weighted targets + shrinkage * global) / (sum of weights + shrinkage)``. The
pseudo-count and the soft-versus-top-1 assignment are chosen on validation only, by the
shared masked-MSE criterion (:mod:`trouter.routers.tuning`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.encoders import get_encoder
from trouter.routers.base import Prediction, Queries, Router, query_texts, register
from trouter.routers.tuning import (
    Candidate,
    merge,
    select_best,
    targets,
    tuning_split,
    tuning_table,
    validation_loss,
)
from trouter.taxonomy.assign import anchor_embeddings, leaf_similarity, soft_assignment
from trouter.taxonomy.model import Taxonomy

ASSIGNMENTS = ("soft", "top1")
#: Pseudo-counts tried on validation; ``inf`` means "ignore the task type" (global means).
DEFAULT_SHRINKAGES = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, float("inf"))
#: Softmax temperatures tried for the soft assignment (cosine-similarity units).
DEFAULT_TEMPERATURES = (0.01, 0.02, 0.05)


def assignment_weights(
    similarity: np.ndarray, mode: str, temperature: float | None = None
) -> np.ndarray:
    """(n, K) leaf weights per query: softmax of similarities, or one-hot on the best leaf."""
    if mode == "soft":
        if temperature is None:
            raise ValueError("the soft assignment needs a temperature")
        return soft_assignment(similarity, temperature)
    if mode == "top1":
        weights = np.zeros_like(similarity)
        if len(similarity):
            weights[np.arange(len(similarity)), similarity.argmax(axis=1)] = 1.0
        return weights
    raise ValueError(f"unknown assignment {mode!r}; choose from {ASSIGNMENTS}")


def leaf_statistics(weights: np.ndarray, values: np.ndarray, mask: np.ndarray):
    """Per-leaf weighted target sums (K, j), weight sums (K, j) and global means (j,).

    Cell by cell, a masked target adds neither to the sum nor to the weight: an unknown
    score must not pull a leaf's mean towards 0.
    """
    observed = mask.astype(float)
    sums = weights.T @ (values * observed)
    counts = weights.T @ observed
    n_obs = observed.sum(axis=0)
    global_mean = np.where(n_obs > 0, (values * observed).sum(axis=0) / np.maximum(n_obs, 1), 0.5)
    return sums, counts, global_mean


def shrunk_means(
    sums: np.ndarray, counts: np.ndarray, global_mean: np.ndarray, shrinkage: float
) -> np.ndarray:
    """Leaf means pulled towards the global mean with pseudo-count ``shrinkage``."""
    if np.isinf(shrinkage):
        return np.broadcast_to(global_mean, sums.shape).copy()
    denominator = counts + shrinkage
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums + shrinkage * global_mean) / denominator
    # a leaf no training row reached (possible with top-1 and no shrinkage): global mean
    return np.where(denominator > 1e-12, means, global_mean[None, :])


@register("metric-router")
class MetricRouter(Router):
    """Per-task-type average metrics: taxonomy leaves by embedding similarity, then the
    (shrunk) mean performance and cost of the training queries in the query's leaves."""

    def __init__(
        self,
        seed: int = 0,
        taxonomy: str | None = None,
        assignment: str | None = None,
        shrinkage: float | None = None,
        shrinkages: Sequence[float] = DEFAULT_SHRINKAGES,
        temperature: float | None = None,
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        refit: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            taxonomy=taxonomy,
            assignment=assignment,
            shrinkage=shrinkage,
            shrinkages=[float(s) for s in shrinkages],
            temperature=temperature,
            temperatures=[float(t) for t in temperatures],
            refit=refit,
        )
        if assignment is not None and assignment not in ASSIGNMENTS:
            raise ValueError(f"unknown assignment {assignment!r}; choose from {ASSIGNMENTS}")
        if shrinkage is None and not shrinkages:
            raise ValueError("metric-router needs shrinkage or a non-empty list shrinkages")
        if any(s < 0 for s in [*(shrinkages or []), shrinkage or 0.0]):
            raise ValueError("shrinkage pseudo-counts must be >= 0")
        if temperature is None and not temperatures:
            raise ValueError("metric-router needs temperature or a non-empty list temperatures")
        tried = [*(temperatures or []), *([temperature] if temperature is not None else [])]
        if any(t <= 0 for t in tried):
            raise ValueError("metric-router softmax temperatures must be positive")

    def _taxonomy(self) -> Taxonomy:
        path = self.params["taxonomy"]
        return Taxonomy.load(path) if path else Taxonomy.default()

    def _assignment_grid(self) -> list[tuple[str, float | None]]:
        """(mode, temperature) settings to try; top-1 needs no temperature."""
        modes = [self.params["assignment"]] if self.params["assignment"] else ASSIGNMENTS
        fixed = self.params["temperature"]
        temperatures = [fixed] if fixed is not None else self.params["temperatures"]
        grid: list[tuple[str, float | None]] = []
        for mode in modes:
            grid += [(mode, t) for t in temperatures] if mode == "soft" else [(mode, None)]
        return grid

    def _shrinkage_grid(self) -> list[float]:
        fixed = self.params["shrinkage"]
        return [fixed] if fixed is not None else list(self.params["shrinkages"])

    # ----- fitting -----------------------------------------------------------------------
    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        self.taxonomy_ = self._taxonomy()
        self.leaf_ids_ = self.taxonomy_.leaf_ids()
        fit_rows, val_rows = tuning_split(train, validation, self.seed)
        fit_sim = self._similarity(fit_rows.texts)
        val_sim = self._similarity(val_rows.texts)
        values, mask = targets(fit_rows)
        m = len(fit_rows.models)
        candidates = []
        for mode, temperature in self._assignment_grid():
            weights = assignment_weights(fit_sim, mode, temperature)
            stats = leaf_statistics(weights, values, mask)
            val_weights = assignment_weights(val_sim, mode, temperature)
            for shrinkage in self._shrinkage_grid():
                out = val_weights @ shrunk_means(*stats, shrinkage)
                pred = Prediction(fit_rows.model_names, out[:, :m], out[:, m:])
                setting = {"assignment": mode, "temperature": temperature, "shrinkage": shrinkage}
                candidates.append(Candidate(setting, validation_loss(pred, val_rows)))
        best = select_best(candidates)
        self.tuning_ = tuning_table(candidates)
        self.assignment_ = str(best.params["assignment"])
        self.temperature_ = best.params["temperature"]
        self.shrinkage_ = float(best.params["shrinkage"])
        self.validation_loss_ = float(best.loss)

        if self.params["refit"]:
            rows = merge(fit_rows, val_rows)
            sim = np.concatenate([fit_sim, val_sim])
        else:
            rows, sim = fit_rows, fit_sim
        weights = assignment_weights(sim, self.assignment_, self.temperature_)
        values, mask = targets(rows)
        sums, counts, global_mean = leaf_statistics(weights, values, mask)
        self.leaf_metrics_ = shrunk_means(sums, counts, global_mean, self.shrinkage_)
        self.leaf_rows_ = weights.sum(axis=0)  # (soft) number of training rows per leaf
        self.models_ = rows.model_names
        return self

    # ----- prediction --------------------------------------------------------------------
    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        texts = query_texts(queries)
        weights = self.assign(texts)
        out = np.clip(weights @ self.leaf_metrics_, 0.0, 1.0)
        m = len(models)
        return Prediction(list(models), out[:, :m], out[:, m:])

    def assign(self, texts: Sequence[str]) -> np.ndarray:
        """(n, K) leaf weights of queries, with the assignment mode chosen in ``fit``."""
        self._require_fitted()
        similarity = self._similarity(list(texts))
        return assignment_weights(similarity, self.assignment_, self.temperature_)

    def _similarity(self, texts: Sequence[str]) -> np.ndarray:
        """Leaf similarity in this router's encoder space; the taxonomy's anchors are encoded
        once per taxonomy and encoder object, not per call (hundreds of texts: most of a
        query's routing time). Keyed by the encoder's type too: a load-time check may route
        through a stand-in encoder."""
        key = (id(self.taxonomy_), type(get_encoder(self.encoder)))
        cache = self.__dict__.setdefault("_anchors", {})
        if key not in cache:
            if len(cache) > 4:
                cache.clear()
            cache[key] = (self.taxonomy_, anchor_embeddings(self.taxonomy_, self.encoder))
        return leaf_similarity(self.taxonomy_, list(texts), self.encoder, cache[key][1])

    def leaf_table(self) -> list[dict[str, object]]:
        """Per leaf: training rows reaching it and the predicted metrics per model."""
        models = self._require_fitted()
        m = len(models)
        return [
            {
                "leaf_id": leaf_id,
                "rows": float(self.leaf_rows_[k]),
                "performance": dict(zip(models, self.leaf_metrics_[k, :m].tolist(), strict=True)),
                "cost": dict(zip(models, self.leaf_metrics_[k, m:].tolist(), strict=True)),
            }
            for k, leaf_id in enumerate(self.leaf_ids_)
        ]

    # ----- persistence: the taxonomy travels as its JSON data ------------------------------
    def get_state(self) -> dict[str, object]:
        state = super().get_state()
        state["taxonomy_"] = self.taxonomy_.model_dump(exclude_defaults=True)
        return state

    def set_state(self, state: dict[str, object]) -> None:
        state = dict(state)
        self.taxonomy_ = Taxonomy.from_data(state.pop("taxonomy_"), source="saved taxonomy")
        super().set_state(state)
