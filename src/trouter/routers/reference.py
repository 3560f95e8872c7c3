"""Reference routers that every report shows: oracle, random, best-single, cheapest, and the
dataset-oracle (the best model per task in hindsight)."""

from __future__ import annotations

import zlib

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.routers.base import Prediction, Queries, Router, query_texts, register


class _ConstantRouter(Router):
    """Predicts the same per-model performance and cost for every query."""

    query_independent = True

    def _constant(self, queries: Queries, perf: np.ndarray, cost: np.ndarray) -> Prediction:
        n = len(query_texts(queries))
        return Prediction(self._require_fitted(), np.tile(perf, (n, 1)), np.tile(cost, (n, 1)))


@register("best-single")
class BestSingleRouter(_ConstantRouter):
    """Mean training performance and cost per model: routes every query to the one model
    with the best mean utility under the requested weights."""

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        self.models_ = train.model_names
        self.mean_performance_ = np.nanmean(train.performance, axis=0)
        self.mean_cost_ = np.nanmean(train.normalised_cost, axis=0)
        return self

    def predict(self, queries: Queries) -> Prediction:
        return self._constant(queries, self.mean_performance_, self.mean_cost_)


@register("cheapest")
class CheapestRouter(_ConstantRouter):
    """Always the model with the lowest mean training cost, whatever the weights."""

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        self.models_ = train.model_names
        mean_cost = np.nanmean(train.normalised_cost, axis=0)
        self.mean_cost_ = mean_cost
        # A performance score that only the cheapest model has makes it win for any weights.
        self.performance_ = (mean_cost == mean_cost.min()).astype(float)
        return self

    def predict(self, queries: Queries) -> Prediction:
        cost = np.where(self.performance_ > 0, 0.0, 1.0)
        return self._constant(queries, self.performance_, cost)


@register("random")
class RandomRouter(Router):
    """Uniformly random model per query, reproducible from the seed and the query text."""

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        self.models_ = train.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        texts = query_texts(queries)
        # one generator per text: a query's pick must not depend on its batch neighbours
        keys = [zlib.crc32(t.encode(errors="surrogatepass")) for t in texts]
        scores = np.array(
            [np.random.default_rng([self.seed, key]).random(len(models)) for key in keys]
        ).reshape(len(texts), len(models))
        # Utility is then (w_perf - w_cost) * score + w_cost: increasing in the score for any
        # weights that value performance or saving cost, so argmax is a uniform random pick.
        return Prediction(models, scores, 1.0 - scores)


@register("oracle")
class OracleRouter(Router):
    """Reads the true test labels: the upper bound every router is measured against."""

    needs_labels = True

    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        self.models_ = train.model_names
        return self

    def predict(self, queries: Queries) -> Prediction:
        if not isinstance(queries, RoutingDataset):
            raise TypeError("the oracle routes only labelled queries (a RoutingDataset)")
        self._require_fitted()
        return Prediction(queries.model_names, queries.performance, queries.normalised_cost)


@register("dataset-oracle")
class DatasetOracleRouter(OracleRouter):
    """The best single model *per task* in hindsight: an upper bound for any router that
    knows which task a query belongs to but nothing about the query itself.

    It reads the true test labels of each task's rows and predicts, for every query, its
    task's mean performance and normalised cost per model, so each task goes to the model of
    best mean utility on that task's test rows for the requested weights.
    """

    def predict(self, queries: Queries) -> Prediction:
        truth = super().predict(queries)
        perf, cost = np.empty_like(truth.performance), np.empty_like(truth.cost)
        for task in np.unique(queries.tasks):
            rows = queries.tasks == task
            perf[rows] = np.nanmean(truth.performance[rows], axis=0)
            cost[rows] = np.nanmean(truth.cost[rows], axis=0)
        return Prediction(truth.models, perf, cost)
