"""k-nearest-neighbour router: a query is predicted to behave like its closest training queries.

The non-parametric baseline of routing papers: on the frozen MiniLM embedding, the predicted
performance and normalised cost of each model is the (optionally similarity-weighted)
average over the k training queries of highest cosine similarity. Masked cells are left out
of each average, cell by cell, so a neighbour with one unknown score still informs the
others. k and the weighting are tuned on validation with the shared criterion
(:mod:`trouter.routers.tuning`); then the validation rows join the index, since for a
memory-based model more neighbours are strictly more evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.routers.base import Prediction, Queries, Router, register
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

DEFAULT_KS = (5, 10, 20, 50, 100, 200)
WEIGHTINGS = ("uniform", "softmax")
#: Rows of queries scored against the index at once; bounds memory to chunk x index floats.
CHUNK = 2048


def nearest(similarity: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of each row's ``k`` most similar index rows, unordered."""
    k = min(k, similarity.shape[1])
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]


def neighbour_average(
    similarity: np.ndarray,
    values: np.ndarray,
    mask: np.ndarray,
    k: int,
    weighting: str,
    temperature: float,
    prior: np.ndarray,
    top: np.ndarray | None = None,
) -> np.ndarray:
    """Masked (weighted) mean of ``values`` over each row's ``k`` most similar index rows.

    ``similarity`` is (n, N) against an index of N rows whose targets are ``values`` (N, j)
    with observation ``mask``; a column with no observed neighbour falls back to ``prior``.
    ``top`` may pass in ``nearest(similarity, k)`` when it is already known.
    """
    if top is None:
        top = nearest(similarity, k)
    sims = np.take_along_axis(similarity, top, axis=1)
    if weighting == "uniform":
        weights = np.ones_like(sims)
    elif weighting == "softmax":
        # softmax over the neighbours' cosine similarity: closer queries count more
        weights = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature)
    else:
        raise ValueError(f"unknown knn weighting {weighting!r}; choose from {WEIGHTINGS}")
    observed = mask[top].astype(np.float32)  # (n, k, j)
    num = np.einsum("nk,nkj->nj", weights, values[top] * observed)
    den = np.einsum("nk,nkj->nj", weights, observed)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.maximum(den, 1e-12), prior[None, :])
    return np.clip(out, 0.0, 1.0)


@register("knn")
class KNNRouter(Router):
    """Cosine kNN on the frozen query embedding, predicting performance and normalised cost.

    Hyper-parameters: ``k`` and ``weighting`` fix a setting (``None`` = tune over ``ks`` and
    both weightings on validation, separately for performance and for cost); ``temperature``
    is the softmax weighting's scale on cosine similarity; ``refit`` adds the validation
    rows to the index after tuning.

    The default encoder is ``static``: on the three public suites its utility is within
    0.005 of MiniLM's in 17 of 18 settings (docs/results.md, "Encoders") at a fiftieth of the cost.
    """

    default_encoder = "static"

    def __init__(
        self,
        seed: int = 0,
        k: int | None = None,
        ks: Sequence[int] = DEFAULT_KS,
        weighting: str | None = None,
        temperature: float = 0.1,
        refit: bool = True,
    ) -> None:
        super().__init__(
            seed=seed,
            k=k,
            ks=list(ks),
            weighting=weighting,
            temperature=temperature,
            refit=refit,
        )
        if weighting is not None and weighting not in WEIGHTINGS:
            raise ValueError(f"unknown knn weighting {weighting!r}; choose from {WEIGHTINGS}")
        if k is None and not ks:
            raise ValueError("knn needs k or a non-empty list ks to tune over")
        for value in [k] if k is not None else list(ks):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"knn k must be a whole number >= 1, got {value!r}")
        if temperature <= 0:
            raise ValueError(f"knn temperature must be positive, got {temperature}")

    # ----- fitting -----------------------------------------------------------------------
    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        fit_rows, val_rows = tuning_split(train, validation, self.seed)
        index_x = embed(fit_rows, self.encoder)
        index_y, index_mask = targets(fit_rows)
        prior = _column_prior(index_y, index_mask)
        similarity = embed(val_rows, self.encoder) @ index_x.T

        ks = [self.params["k"]] if self.params["k"] is not None else self.params["ks"]
        weightings = [self.params["weighting"]] if self.params["weighting"] else WEIGHTINGS
        m = len(fit_rows.models)
        # The criterion is performance MSE + cost MSE, so each metric gets its own setting:
        # noisy 0/1 performance wants many neighbours, smooth cost far fewer.
        candidates: dict[str, list[Candidate[None]]] = {metric: [] for metric in METRICS}
        for k in sorted({min(int(k), len(fit_rows)) for k in ks}):
            for weighting in weightings:
                out = neighbour_average(
                    similarity,
                    index_y,
                    index_mask,
                    k,
                    weighting,
                    self.params["temperature"],
                    prior,
                )
                pred = Prediction(fit_rows.model_names, out[:, :m], out[:, m:])
                for metric, loss in zip(METRICS, validation_terms(pred, val_rows), strict=True):
                    candidates[metric].append(Candidate({"k": k, "weighting": weighting}, loss))
        best = {metric: select_best(candidates[metric]) for metric in METRICS}
        self.tuning_ = {metric: tuning_table(candidates[metric]) for metric in METRICS}
        self.k_ = {metric: int(best[metric].params["k"]) for metric in METRICS}
        self.weighting_ = {metric: str(best[metric].params["weighting"]) for metric in METRICS}
        self.validation_loss_ = float(np.nansum([best[metric].loss for metric in METRICS]))

        index = merge(fit_rows, val_rows) if self.params["refit"] else fit_rows
        self.index_x_ = embed(index, self.encoder)
        self.index_y_, self.index_mask_ = targets(index)
        self.prior_ = _column_prior(self.index_y_, self.index_mask_)
        self.models_ = index.model_names
        return self

    # ----- prediction --------------------------------------------------------------------
    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        x = embed(queries, self.encoder)
        m = len(models)
        out = np.empty((len(x), 2 * m), dtype=np.float32)
        for start in range(0, len(x), CHUNK):
            sim = x[start : start + CHUNK] @ self.index_x_.T
            # the selection dominates a batch's cost: metrics with the same k share it
            tops = {k: nearest(sim, k) for k in {self.k_[metric] for metric in METRICS}}
            for i, metric in enumerate(METRICS):
                cols = slice(i * m, (i + 1) * m)
                out[start : start + CHUNK, cols] = neighbour_average(
                    sim,
                    self.index_y_[:, cols],
                    self.index_mask_[:, cols],
                    self.k_[metric],
                    self.weighting_[metric],
                    self.params["temperature"],
                    self.prior_[cols],
                    tops[self.k_[metric]],
                )
        return Prediction(list(models), out[:, :m].astype(float), out[:, m:].astype(float))


def _column_prior(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-column mean of observed targets (0.5 where a column has none): the fallback."""
    counts = mask.sum(axis=0)
    sums = (values * mask).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.5).astype(np.float32)
