"""Route queries with a trained router: ``trouter.load(DIR)`` returns a :class:`RoutingService`.

The service wraps a saved router (``Router.save(dir)``) and answers "which pool model should
take this query?" under a *policy*: a named scenario (``"balanced"``, ``"cost-first"``,
``"performance-first"``) or explicit :class:`Weights` (or a ``(w_perf, w_cost)`` tuple),
optionally with a dollar limit ``max_cost_usd`` on the predicted cost of the call.

Every choice is made by :func:`trouter.routers.base.decide`, the same function the evaluation
harness, ``trouter route`` and the proxy use, so a guarded router's fallback to best-single
holds everywhere. Each result names the reason for its choice, the predicted performance,
normalised cost and utility of every served model (the router's real predictions), the
predicted cost in USD (input tokens estimated from the text x pool prices, plus
``output_tokens`` completion tokens), and the ranking the proxy uses as its fallback order.

``max_normalised_cost`` (formerly ``budget``) is the older limit on predicted *normalised*
cost in [0, 1]; it picks the best predicted performance within it and the cheapest model
when none fits.

A pool model may stand in for a model the router was trained on (``routes_as`` in the pool
file): the router's predictions for that model route it, and results name the pool model.

New query texts are encoded without being added to the encoder's disk cache: a server would
otherwise write a cache shard and keep a vector in memory for every request it ever sees.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
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
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, Router, take_extras
from trouter.serving.newcomers import join_new_models
from trouter.serving.pool_match import PoolMismatchError, match_pool
from trouter.serving.ranking import (
    CHARS_PER_TOKEN,
    DEFAULT_OUTPUT_TOKENS,
    BudgetError,
    Policy,
    RoutingRequestError,
    estimate_input_tokens,
    rank_models,
    resolve_policy,
)

if TYPE_CHECKING:
    from trouter.llm.pool import Pool

log = logging.getLogger("trouter.serving")

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "BudgetError",
    "Policy",
    "PoolMismatchError",
    "RouteResult",
    "RoutingRequestError",
    "RoutingService",
    "estimate_input_tokens",
    "load",
    "match_pool",
    "rank_models",
    "resolve_policy",
]


@dataclass(frozen=True)
class RouteResult:
    """The routing decision for one query, with everything it was based on.

    ``model`` is the pool model to call (``routes_as``: the trained model whose predictions
    it was routed by); ``reason`` says why it was chosen. ``performance``, ``cost``
    (normalised, in [0, 1]) and ``utility`` are the router's predictions per served model;
    ``cost_usd`` the predicted USD of the call per model with known prices. Models a limit
    excludes are absent from ``utility`` and ``ranking``; ``ranking`` lists the models the
    policy allows, best first (under ``max_normalised_cost``, then the rest cheapest first).
    ``task_type`` is the most likely taxonomy leaf and its posterior, for routers that infer
    one (trouter, trouter+), else None.
    """

    query: str
    model: str
    routes_as: str
    reason: str
    policy: str
    performance: dict[str, float]
    cost: dict[str, float]
    cost_usd: dict[str, float]
    utility: dict[str, float]
    ranking: tuple[str, ...]
    task_type: str | None = None
    #: what the router keeps with its decision (the online router's prior and cell), for
    #: the decision log; internal: not part of the result's dict
    logged: dict[str, Any] | None = field(
        default=None, repr=False, compare=False, metadata={"internal": True}
    )

    def to_dict(self) -> dict[str, Any]:
        """The public fields (every field but the internal ones), as plain data."""
        out = asdict(self)
        for name in internal_fields(RouteResult):
            out.pop(name)
        return out


def internal_fields(cls) -> list[str]:
    """Fields of a dataclass marked ``metadata={"internal": True}``."""
    return [f.name for f in fields(cls) if f.metadata.get("internal")]


def task_types(router: Router, queries: Sequence[str]) -> list[str] | None:
    """The most likely task type per query (``leaf (q = 0.93)``), None for other routers."""
    if not hasattr(router, "posterior"):
        return None
    posterior = router.posterior(list(queries))
    tops = np.argmax(posterior, axis=1)
    return [f"{router.leaf_ids_[t]} (q = {posterior[i, t]:.2f})" for i, t in enumerate(tops)]


class RoutingService:
    """A trained router restricted to the models that are actually served.

    ``models`` (default: all the router's models) must be a non-empty subset of the router's
    models; predictions for other models are dropped before ranking. ``names`` maps a
    trained model to the pool model that serves it (``routes_as``); results name the pool
    model. ``prices`` holds (input, output) USD per million tokens per served model (None
    where unknown); without it the price map of LiteLLM is asked for the trained names.
    """

    def __init__(
        self,
        router: Router,
        models: Sequence[str] | None = None,
        source: Path | None = None,
        cache_new_queries: bool = False,
        names: Mapping[str, str] | None = None,
        prices: Mapping[str, tuple[float, float] | None] | None = None,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    ) -> None:
        trained = router._require_fitted()
        self.router = router
        self.source = source
        self.router_models: list[str] = list(trained if models is None else models)
        unknown = [m for m in self.router_models if m not in trained]
        if unknown or not self.router_models:
            raise PoolMismatchError(
                f"cannot serve models {unknown or '(none)'}: the router"
                f"{f' in {source}' if source else ''} was trained on {trained}"
            )
        names = dict(names or {})
        #: The served (pool) names, in the order of ``router_models``.
        self.models: list[str] = [names.get(m, m) for m in self.router_models]
        if len(set(self.models)) != len(self.models):
            raise PoolMismatchError(f"two trained models map to one pool model: {names}")
        self._served_name = dict(zip(self.router_models, self.models, strict=True))
        self._routes_as = dict(zip(self.models, self.router_models, strict=True))
        self.cache_new_queries = cache_new_queries
        self.output_tokens = int(output_tokens)
        if prices is None:
            from trouter.llm.pool import lookup_price

            prices = {served: lookup_price(m) for m, served in self._served_name.items()}
        self._prices = np.array(
            [prices.get(name) or (np.nan, np.nan) for name in self.models], dtype=float
        ).reshape(len(self.models), 2)

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

    def routes_as(self, model: str) -> str:
        """The trained model whose predictions route served model ``model``."""
        return self._routes_as[model]

    def query_cache(self) -> QueryCache:
        """The bounded LRU that holds embeddings of recently routed query texts."""
        return get_encoder(self.router.encoder).queries

    def predict(self, queries: Sequence[str]) -> Prediction:
        """Predicted performance and normalised cost for the served models (one batch),
        columns named by the served names; a guarded router's override is kept."""
        texts = [check_query(q) for q in queries]
        with self._encoding():
            raw = self.router.predict(texts)
        served = raw.reorder(self.router_models)
        override_models = None
        if served.override is not None:
            override_models = [
                self._served_name.get(m, f"{m} (not served)") for m in served.override_models
            ]
        return Prediction(list(self.models), served.performance, served.cost, served.override,
                          override_models, extras=served.extras)  # fmt: skip

    def _encoding(self):
        """New query texts go to the bounded query LRU, not to a cache shard on disk."""
        encoder = get_encoder(self.router.encoder)
        return nullcontext() if self.cache_new_queries else encoder.transient()

    def predicted_cost_usd(
        self, queries: Sequence[str], output_tokens: int | None = None
    ) -> np.ndarray:
        """Predicted USD per query and served model (NaN where the price is unknown)."""
        tokens_in = np.array([estimate_input_tokens(q) for q in queries], dtype=float)
        tokens_out = self.output_tokens if output_tokens is None else output_tokens
        return (tokens_in[:, None] * self._prices[:, 0] + tokens_out * self._prices[:, 1]) / 1e6

    def route(
        self,
        query: str | Sequence[str],
        scenario: str | None = None,
        weights: Weights | tuple[float, float] | None = None,
        max_cost_usd: float | None = None,
        max_normalised_cost: float | None = None,
        budget: float | None = None,
    ) -> RouteResult | list[RouteResult]:
        """Route one query (returns a :class:`RouteResult`) or a list (returns a list).

        State the preference as a ``scenario`` name or ``weights`` (default: ``balanced``),
        optionally with ``max_cost_usd``, a limit in dollars on the predicted cost of the
        call (:class:`BudgetError` when no served model fits). ``budget`` is the deprecated
        name of ``max_normalised_cost``.
        """
        if budget is not None:
            warnings.warn(
                "route(budget=...) is a limit on predicted *normalised* cost in [0, 1], not "
                "dollars; it is renamed max_normalised_cost. For dollars use max_cost_usd",
                DeprecationWarning,
                stacklevel=2,
            )
            if max_normalised_cost is not None:
                raise RoutingRequestError("give budget or max_normalised_cost, not both")
            max_normalised_cost = budget
        policy = resolve_policy(scenario, weights, max_normalised_cost, max_cost_usd)
        single = isinstance(query, str)
        queries = [query] if single else list(query)
        results = self.route_batch(queries, policy)
        return results[0] if single else results

    def route_batch(self, queries: Sequence[str], policy: Policy) -> list[RouteResult]:
        """Route many queries under one resolved policy with a single prediction."""
        if not queries:
            return []
        results = self.results(queries, self.predict(queries), policy)
        types = task_types(self.router, queries)
        if types is None:
            return results
        return [replace(r, task_type=t) for r, t in zip(results, types, strict=True)]

    def results(
        self, queries: Sequence[str], prediction: Prediction, policy: Policy
    ) -> list[RouteResult]:
        """Rank the models of an existing prediction (one row per query) under ``policy``."""
        usd = self.predicted_cost_usd(queries)
        with self._encoding():  # an override (the online router's) may encode again
            order, score, reasons = rank_models(prediction, policy, usd)
        names = self.models
        limited = policy.max_cost_usd is not None
        # whole matrices to Python lists once: per-row numpy calls cost more than routing
        rows = zip(
            order.tolist(),
            reasons,
            _rows_as_dicts(names, prediction.performance),
            _rows_as_dicts(names, prediction.cost),
            _rows_as_dicts(names, usd),
            _rows_as_dicts(names, score),
            strict=True,
        )
        results = []
        for row, (query, (ranks, reason, performance, cost, cost_usd, utility)) in enumerate(
            zip(queries, rows, strict=True)
        ):
            ranking = tuple(names[i] for i in ranks if not limited or names[i] in utility)
            results.append(
                RouteResult(
                    query=query,
                    model=ranking[0],
                    routes_as=self._routes_as[ranking[0]],
                    reason=reason,
                    policy=policy.name,
                    performance=performance,
                    cost=cost,
                    cost_usd=cost_usd,
                    utility=utility,
                    ranking=ranking,
                    logged=take_extras(prediction.extras, row),
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


def load(
    model_dir: str | Path,
    pool: Pool | str | Path | None = None,
    allow_partial_pool: bool = False,
    encoder: str | None = None,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
) -> RoutingService:
    """Load a trained router directory; with ``pool``, check the pool can serve its models.

    ``encoder``, when given, must be the encoder the router was trained with: its predictions
    are a function of that encoder's vectors, and another encoder's are meaningless to it.
    With a pool, results name the pool's models (see ``routes_as``) and USD costs come from
    its prices; a model with no price or only one of its two is logged as a warning and has
    no predicted USD cost (never $0).
    """
    path = Path(model_dir)
    router = Router.load(path)
    router._require_fitted()
    if encoder is not None and check_encoder(encoder) != router.encoder:
        raise EncoderError(
            f"the router in {path} was trained with the {router.encoder!r} encoder and cannot "
            f"serve with {encoder!r}; retrain it with --param encoder={encoder}"
        )
    if pool is None:
        return RoutingService(router, source=path, output_tokens=output_tokens)
    if not hasattr(pool, "models"):
        from trouter.llm.pool import Pool

        pool = Pool.load(pool)
    where = f" (router {path}, pool {getattr(pool, 'source', None) or 'given'})"
    stands_for = {m.name: m.routes_as or m.name for m in pool.models}
    join_new_models(router, pool.models)  # an online router learns a new model
    served = match_pool(router.models_, stands_for, allow_partial_pool, where)
    for warning in pool.price_warnings():
        log.warning("%s", warning)
    prices = {m.name: m.prices for m in pool.models}
    return RoutingService(
        router,
        models=list(served),
        source=path,
        names=served,
        prices=prices,
        output_tokens=output_tokens,
    )
