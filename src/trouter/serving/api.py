"""Route queries with a trained router: ``trouter.load(DIR)`` returns a :class:`RoutingService`.

The service wraps a saved router (``Router.save(dir)``) and answers "which pool model should
take this query?" under a *policy*:

* a named scenario (``"balanced"``, ``"cost-first"``, ``"performance-first"``), or explicit
  :class:`Weights` (or a ``(w_perf, w_cost)`` tuple): pick the highest predicted utility
  ``w_perf * perf_hat + w_cost * cost_hat``;
* a ``budget`` on predicted *normalised* cost (in [0, 1], where 0 is the cheapest and 1 the
  most expensive call seen in training): pick the model with the best predicted performance
  among those whose predicted normalised cost is <= budget; when none fits, the cheapest
  predicted model is chosen (a budget is a preference, not a reason to fail a request).

Every result carries the full ranking of the served models, best first, which the proxy uses
as its fallback order when an upstream call fails. Lists of queries are routed with a single
``predict`` call (one encoder batch), so batch routing is much faster than a loop.

New query texts are encoded without being added to the encoder's disk cache: a server would
otherwise write a cache shard and keep a vector in memory for every request it ever sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trouter.encoders import (
    EncoderError,
    QueryCache,
    check_encoder,
    get_encoder,
    unicode_problem,
)
from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.routers.base import Prediction, Router

if TYPE_CHECKING:
    from trouter.llm.pool import Pool


class RoutingRequestError(ValueError):
    """A routing call that cannot be answered: empty query, unknown scenario, bad budget."""


class PoolMismatchError(ValueError):
    """The pool cannot serve the models the router was trained to choose between."""


@dataclass(frozen=True)
class Policy:
    """How a query's model is chosen: utility under ``weights``, or best within ``budget``."""

    name: str
    weights: Weights | None = None
    budget: float | None = None


@dataclass(frozen=True)
class RouteResult:
    """The routing decision for one query, with everything it was based on.

    ``utility`` holds the score the policy maximises: the weighted utility for scenarios and
    weights; under a budget, the predicted performance of the models within the budget (models
    over budget are absent). ``ranking`` lists every served model, best first.
    """

    query: str
    model: str
    policy: str
    performance: dict[str, float]
    cost: dict[str, float]
    utility: dict[str, float]
    ranking: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_policy(
    scenario: str | None = None,
    weights: Weights | tuple[float, float] | None = None,
    budget: float | None = None,
) -> Policy:
    """Turn the three mutually exclusive ways of stating a preference into one :class:`Policy`.

    With none given the policy is the ``balanced`` scenario.
    """
    given = [
        label
        for label, v in (("scenario", scenario), ("weights", weights), ("budget", budget))
        if v is not None
    ]
    if len(given) > 1:
        raise RoutingRequestError(f"give only one of scenario, weights or budget (got {given})")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int | float) or math.isnan(budget):
            raise RoutingRequestError(f"budget must be a number, got {budget!r}")
        if budget < 0:
            raise RoutingRequestError(
                f"budget is a predicted normalised cost in [0, 1]; got {budget}"
            )
        return Policy(name=f"budget<={budget:g}", budget=float(budget))
    if weights is not None:
        if not isinstance(weights, Weights):
            try:
                perf, cost = (float(w) for w in weights)
            except (TypeError, ValueError) as err:
                raise RoutingRequestError(
                    f"weights must be Weights or a (w_perf, w_cost) pair, got {weights!r}"
                ) from err
            weights = Weights(performance=perf, cost=cost)
        if not all(math.isfinite(w) for w in (weights.performance, weights.cost)):
            raise RoutingRequestError(f"weights must be finite numbers, got {weights}")
        return Policy(name=f"weights({weights.performance:g},{weights.cost:g})", weights=weights)
    name = "balanced" if scenario is None else scenario
    if name not in SCENARIOS:
        raise RoutingRequestError(
            f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}, "
            "or pass weights=(w_perf, w_cost) or budget=<normalised cost>"
        )
    return Policy(name=name, weights=SCENARIOS[name])


def rank_models(prediction: Prediction, policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Per query: model indices best first, and the policy's score matrix (NaN = not eligible).

    Ties go to the cheaper model, as in :meth:`Prediction.choose`.
    """
    perf, cost = prediction.performance, prediction.cost
    if np.isnan(perf).any():
        perf = np.nan_to_num(perf, nan=-np.inf)
    if np.isnan(cost).any():
        cost = np.nan_to_num(cost, nan=np.inf)
    if policy.budget is None:
        assert policy.weights is not None
        score = policy.weights.utility(perf, cost)
        return np.lexsort((cost, -score), axis=-1), score
    within = cost <= policy.budget
    score = np.where(within, perf, np.nan)
    # Within budget by performance (best first, cheaper on ties), then the rest cheapest first.
    primary = np.where(within, -perf, np.inf)
    return np.lexsort((cost, primary), axis=-1), score


class RoutingService:
    """A trained router restricted to the models that are actually served.

    ``models`` (default: all the router's models) must be a non-empty subset of the router's
    models; predictions for other models are dropped before ranking.
    """

    def __init__(
        self,
        router: Router,
        models: Sequence[str] | None = None,
        source: Path | None = None,
        cache_new_queries: bool = False,
    ) -> None:
        trained = router._require_fitted()
        self.router = router
        self.source = source
        self.models: list[str] = list(trained if models is None else models)
        unknown = [m for m in self.models if m not in trained]
        if unknown or not self.models:
            raise PoolMismatchError(
                f"cannot serve models {unknown or '(none)'}: the router"
                f"{f' in {source}' if source else ''} was trained on {trained}"
            )
        self._columns = np.array([trained.index(m) for m in self.models])
        self.cache_new_queries = cache_new_queries

    @property
    def router_name(self) -> str:
        return self.router.name

    @property
    def encoder(self) -> str:
        return self.router.encoder

    @property
    def fast_encoder(self) -> bool:
        """True when encoding a query costs well under a millisecond (the static encoder)."""
        return self.router.encoder == "static"

    def query_cache(self) -> QueryCache:
        """The bounded LRU that holds embeddings of recently routed query texts."""
        return get_encoder(self.router.encoder).queries

    def predict(self, queries: Sequence[str]) -> Prediction:
        """Predicted performance and normalised cost for the served models (one batch)."""
        texts = [check_query(q) for q in queries]
        encoder = get_encoder(self.router.encoder)
        scope = nullcontext() if self.cache_new_queries else encoder.transient()
        with scope:
            raw = self.router.predict(texts)
        cols = [raw.models.index(m) for m in self.models]
        return Prediction(list(self.models), raw.performance[:, cols], raw.cost[:, cols])

    def route(
        self,
        query: str | Sequence[str],
        scenario: str | None = None,
        weights: Weights | tuple[float, float] | None = None,
        budget: float | None = None,
    ) -> RouteResult | list[RouteResult]:
        """Route one query (returns a :class:`RouteResult`) or a list (returns a list).

        State the preference as a ``scenario`` name, ``weights``, or a ``budget`` on predicted
        normalised cost; the default is the ``balanced`` scenario.
        """
        policy = resolve_policy(scenario, weights, budget)
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        results = self.route_batch(queries, policy)
        return results[0] if single else results

    def route_batch(self, queries: Sequence[str], policy: Policy) -> list[RouteResult]:
        """Route many queries under one resolved policy with a single prediction."""
        if not queries:
            return []
        return self.results(queries, self.predict(queries), policy)

    def results(
        self, queries: Sequence[str], prediction: Prediction, policy: Policy
    ) -> list[RouteResult]:
        """Rank the models of an existing prediction (one row per query) under ``policy``."""
        order, score = rank_models(prediction, policy)
        names = self.models
        # whole matrices to Python lists once: per-row numpy calls cost more than routing
        rows = zip(
            order.tolist(),
            _rows_as_dicts(names, prediction.performance),
            _rows_as_dicts(names, prediction.cost),
            _rows_as_dicts(names, score),
            strict=True,
        )
        results = []
        for query, (ranks, performance, cost, utility) in zip(queries, rows, strict=True):
            ranking = tuple(map(names.__getitem__, ranks))
            results.append(
                RouteResult(
                    query=query,
                    model=ranking[0],
                    policy=policy.name,
                    performance=performance,
                    cost=cost,
                    utility=utility,
                    ranking=ranking,
                )
            )
        return results

    def __repr__(self) -> str:
        return f"RoutingService(router={self.router!r}, models={self.models})"


def check_query(query: object) -> str:
    """The query itself, or a :class:`RoutingRequestError` saying why it cannot be routed."""
    if not isinstance(query, str):
        raise RoutingRequestError(f"a query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise RoutingRequestError("empty query: there is nothing to route")
    problem = unicode_problem(query)
    if problem is not None:
        raise RoutingRequestError(f"the query {problem}")
    return query


def _rows_as_dicts(names: list[str], values: np.ndarray) -> list[dict[str, float]]:
    """One {model: value} dict per row, NaN (not eligible, unknown) left out."""
    if not np.isnan(values).any():
        return [dict(zip(names, row, strict=True)) for row in values.tolist()]
    return [
        {n: v for n, v in zip(names, row, strict=True) if v == v}  # v == v: not NaN
        for row in values.tolist()
    ]


def match_pool(
    router_models: Sequence[str],
    pool_models: Sequence[str],
    allow_partial: bool = False,
    where: str = "",
) -> list[str]:
    """The router's models that the pool serves, or a :class:`PoolMismatchError`.

    A pool may hold more models than the router knows (they stay reachable by name in the
    proxy, but are never chosen by routing: the router has no prediction for them). A router
    model the pool lacks is refused, because routing would pick a model nobody can call, unless
    ``allow_partial`` is set, in which case routing is restricted to the models both have.
    """
    missing = [m for m in router_models if m not in pool_models]
    served = [m for m in router_models if m in pool_models]
    if missing and (not allow_partial or not served):
        hint = "" if served else " (no model in common)"
        raise PoolMismatchError(
            f"the pool does not serve {len(missing)} of the router's models{hint}{where}: "
            f"missing {missing}.\n  router models: {list(router_models)}\n"
            f"  pool models:   {list(pool_models)}\n"
            "Add them to the pool, or allow routing among the common models only "
            "(allow_partial_pool=True / --allow-partial-pool)."
        )
    return served


def load(
    model_dir: str | Path,
    pool: Pool | str | Path | None = None,
    allow_partial_pool: bool = False,
    encoder: str | None = None,
) -> RoutingService:
    """Load a trained router directory; with ``pool``, check the pool can serve its models.

    ``encoder``, when given, must be the encoder the router was trained with: its predictions
    are a function of that encoder's vectors, and another encoder's are meaningless to it.
    """
    path = Path(model_dir)
    router = Router.load(path)
    trained = router._require_fitted()
    if encoder is not None and check_encoder(encoder) != router.encoder:
        raise EncoderError(
            f"the router in {path} was trained with the {router.encoder!r} encoder and cannot "
            f"serve with {encoder!r}; retrain it with --param encoder={encoder}"
        )
    models = None
    if pool is not None:
        if not hasattr(pool, "models"):
            from trouter.llm.pool import Pool

            pool = Pool.load(pool)
        where = f" (router {path}, pool {getattr(pool, 'source', None) or 'given'})"
        models = match_pool(trained, [m.name for m in pool.models], allow_partial_pool, where)
    return RoutingService(router, models=models, source=path)
