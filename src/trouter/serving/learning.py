"""The proxy's feedback loop: log each decision, take feedback, and let an online router learn.

A :class:`FeedbackLoop` owns the store, the decision log (:class:`~trouter.store.DecisionLog`,
off the request path) and, with ``learn``, a :class:`Learner`: a thread that every
``fold_interval_s`` reads the feedback and background labels in the store that it has not
applied yet, whichever process or replica took them, and applies them to the online
router with ``partial_fit``. Events are idempotent by id, so each fold re-reads a short
window behind its watermark (rows committed late by another process are not missed) and
a restart simply folds everything the store still holds: the state after a restart is
the state of replaying the log.

The online router needs, for each served event, the base prediction and cell of the
query it routed (not the posterior the proxy served by). They are computed for the
logged decisions in the log's writer thread, in batches, so the request path only
queues a record.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from trouter.config import TrouterError
from trouter.encoders import get_encoder
from trouter.routers.online import OnlineRouter
from trouter.serving.api import RouteResult
from trouter.serving.learner import Learner
from trouter.serving.newcomers import TYPICAL_CALL_TOKENS
from trouter.serving.score_watch import ScoreWatch
from trouter.store import Decision, DecisionLog, Feedback, Store
from trouter.store.records import ARM_FEATURES
from trouter.store.writer import Item

log = logging.getLogger("trouter.serving")

REQUEST_ID_HEADER = "x-trouter-request-id"
MAX_REQUEST_ID = 128


def price_prior_router(pool, shared_mean: float = 0.5, **params: Any) -> OnlineRouter:
    """An online router with no base and no training data, for ``serve --router online``.

    Every pool model starts at one shared mean performance, tilted by price (a pricier
    model is assumed slightly better), and at its normalised price for a typical call; a
    model without a known price takes the pool's median. It learns from feedback and labels.
    """
    from trouter.data.dataset import ModelInfo, RoutingDataset

    prices = [e.cost(*TYPICAL_CALL_TOKENS) for e in pool.models]
    known = [p for p in prices if p is not None]
    fill = float(np.median(known)) if known else 1.0
    cost = np.array([[fill if p is None else p for p in prices]])
    models = [ModelInfo(e.name, *(e.prices or (None, None))) for e in pool.models]
    one = np.array(["pool prior"], dtype=object)
    prior = RoutingDataset(
        name="pool-prices", query_ids=one, texts=["pool prior"], tasks=one, benchmarks=one,
        models=models, performance=np.full((1, len(models)), shared_mean), cost=cost,
        splits=np.array(["train"], dtype=object),
    )  # fmt: skip
    # no base and no data: there is no measured best single model to hold on to, so the
    # posterior (and exploration, where enabled) decides from the first feedback on
    return OnlineRouter(base="none", **{"anchor": "base", **params}).fit(prior)


def service_from_pool(pool, explore: float = 0.0):
    """The routing service of ``serve --router online`` without a model directory;
    ``explore``: the share of traffic its capped exploration may take."""
    from trouter.serving.api import RoutingService

    router = price_prior_router(pool, explore=explore)
    return RoutingService(router, prices={e.name: e.prices for e in pool.models})


def loop_from_config(config: dict[str, Any] | None, service) -> FeedbackLoop | None:
    """The feedback loop ``trouter serve`` asked for (``store``, ``ttl_s``, ``log_text``,
    ``learn``), or None without a store."""
    if not config:
        return None
    store = Store.open(config["store"], ttl_s=config["ttl_s"])
    try:
        return FeedbackLoop(store, service, log_text=config["log_text"], learn=config["learn"])
    except LearningError:
        store.close()
        raise


class LearningError(TrouterError, ValueError):
    """``--learn`` was asked of a router that cannot learn from feedback."""


def response_fields(
    rid: str,
    route: RouteResult | None,
    model: str,
    policy: str,
    cost_usd: float | None,
    explored: bool = False,
) -> dict[str, Any]:
    """What a routed reply says about itself (the ``trouter`` key of its JSON body)."""
    predicted = None if route is None else route.cost_usd.get(model)
    return {
        "request_id": rid,
        "model": model,
        "policy": policy,
        "predicted_cost_usd": None if predicted is None or predicted != predicted else predicted,
        "cost_usd": cost_usd,
        "exploration": explored,
    }


def response_headers(fields: dict[str, Any]) -> dict[str, str]:
    """The same as ``x-trouter-*`` headers (USD figures only where known)."""
    headers = {
        REQUEST_ID_HEADER: fields["request_id"],
        "x-trouter-model": fields["model"],
        "x-trouter-policy": fields["policy"],
        "x-trouter-exploration": "true" if fields["exploration"] else "false",
    }
    for key, header in (("predicted_cost_usd", "x-trouter-predicted-cost"),
                        ("cost_usd", "x-trouter-cost")):  # fmt: skip
        if fields[key] is not None:
            headers[header] = f"{fields[key]:.8f}"
    return headers


def request_id(header: str | None) -> str:
    """The client's ``x-trouter-request-id`` when it is a usable id, else a fresh one."""
    if header and len(header) <= MAX_REQUEST_ID and header.isascii() and header.isprintable():
        return header.strip() or time_ordered_id()
    return time_ordered_id()


def time_ordered_id() -> str:
    """A fresh request id: a UUID version 7 (RFC 9562) in hex, whose leading bits are the
    time in milliseconds.

    The decision log's primary key is the request id: random ids (UUID version 4) land all
    over its index, and at 20,000 rows SQLite's writer spent 0.042 ms of CPU a decision on
    them against 0.032 ms on ids that sort by time (``scripts/bench_feedback_loop.py
    --requests 20000 --ids random|time``)."""
    if hasattr(uuid, "uuid7"):  # Python 3.14
        return uuid.uuid7().hex
    millis = time.time_ns() // 1_000_000
    bits = (millis & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10))  # 80 random bits
    bits = bits & ~(0xF << 76) | 0x7 << 76  # version 7
    bits = bits & ~(0x3 << 62) | 0x2 << 62  # variant RFC 9562
    return f"{bits:032x}"


def _set_prior(decision: Decision, models: list[str], perf, cost, cell, embedding=None) -> None:
    """The decision's features become the router's prior (``perf``, ``cost`` over
    ``models``; the linear cells' ``embedding``, where it has one) and its served A/B arm;
    written to the store as they are (store/codec.py)."""
    decision.cell = int(cell)
    arm = {k: v for k, v in (decision.features or {}).items() if k in ARM_FEATURES}
    decision.features = {  # the prior replaces the posterior the route carried
        "models": list(models),
        "prior_performance": perf,
        "prior_cost": cost,
        **arm,  # and the served A/B arm stays
    }
    if embedding is not None:
        decision.features["embedding"] = embedding


class LoopMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry or CollectorRegistry()
        self.written = Counter(
            "trouter_decision_log_written", "Decision records written to the store.", registry=r
        )
        self.dropped = Counter(
            "trouter_decision_log_dropped",
            "Decision records dropped (queue full, or the store slow or down); routing went on.",
            registry=r,
        )
        self.feedback = Counter(
            "trouter_feedback_events",
            "Feedback posts by outcome (accepted, duplicate, unknown, expired).",
            ["status"],
            registry=r,
        )
        self.learned = Counter(
            "trouter_learned_events",
            "Feedback events and background labels applied to the online router.",
            registry=r,
        )
        #: each served model's recent and long-run feedback (fed by the learner)
        self.watch = ScoreWatch(r)


class FeedbackLoop:
    """Decision log + feedback + (optionally) learning for one proxy process (see module)."""

    def __init__(
        self,
        store: Store,
        service,
        registry: CollectorRegistry | None = None,
        log_text: bool = False,
        learn: bool = False,
        fold_interval_s: float = 2.0,
        max_queue: int = 10_000,
    ) -> None:
        self.store, self.service = store, service
        self.metrics = LoopMetrics(registry)
        router = service.router
        online = isinstance(router, OnlineRouter)
        if learn and not online:
            raise LearningError(
                f"learning from feedback needs an online router; {router.name!r} is not one "
                "(train one with --router online, or serve without --learn to only log)"
            )
        self.log = DecisionLog(
            store,
            max_queue=max_queue,
            log_text=log_text,
            prepare=self._prepare if online else None,
            on_written=lambda n: self.metrics.written.inc(n),
            on_dropped=lambda n: self.metrics.dropped.inc(n),
        )
        self.learner = Learner(store, service, self.metrics, fold_interval_s) if learn else None
        self.router_version = str(service.source) if service.source else None
        self.pool = ",".join(service.models)

    def attach(self, app, registry: CollectorRegistry) -> None:
        """Serve ``POST /v1/feedback`` on the proxy's FastAPI ``app``, count into the proxy's
        metrics ``registry``, and start learning (the state is rebuilt from the store)."""
        from trouter.serving.feedback import feedback_router

        self.metrics = LoopMetrics(registry)
        if self.learner is not None:
            self.learner.metrics = self.metrics
        app.include_router(feedback_router(self))
        app.state.feedback = self
        self.start()

    # ----- the request path ----------------------------------------------------------------
    def answered(self, rid, plan, model, usage, cost_usd, started, fallbacks=0) -> None:
        """Queue the decision of a routed request's :class:`~trouter.serving.planning.Plan`
        answered by ``model`` (``started``: its ``time.perf_counter()`` on arrival)."""
        latency_ms = (time.perf_counter() - started) * 1000
        route = plan.route
        text = route.query if route is not None else ""
        propensity, explored = (plan.propensity, plan.explored) if not fallbacks else (1.0, False)
        arm = plan.arm if not fallbacks else None  # a fallback's model was not drawn
        self.record(rid, route, model, text, usage, cost_usd, latency_ms, 200, fallbacks,
                    propensity, explored, arm)  # fmt: skip

    def explorer(self, seed: int | None = None):
        """For an online router with ``explore`` or ``challenge`` > 0: a function the planner
        calls with (text, policy, ranking) that returns the ranking with the router's capped
        exploration or served A/B draw applied, the propensity of the first model, whether it
        explores, and its A/B arm (``ab_arm``/``ab_policy``, empty outside the test); else
        None."""
        router = self.service.router
        drawn = ("explore", "challenge")
        if not isinstance(router, OnlineRouter) or all(
            router.params.get(name, 0) <= 0 for name in drawn
        ):
            return None
        rng = np.random.default_rng(seed)
        served = dict(zip(self.service.router_models, self.service.models, strict=True))

        def explore(text: str, policy, ranking: list[str]) -> tuple[list[str], float, bool, dict]:
            if policy.weights is None or policy.max_cost_usd or policy.max_normalised_cost:
                return ranking, 1.0, False, {}  # a limit decides, not the utility
            with get_encoder(router.encoder).transient():
                made = router.decide([text], policy.weights, rng)[0]
            chosen = served.get(made["model"])
            if chosen not in ranking:
                return ranking, 1.0, False, {}
            arm = {k: made[k] for k in ARM_FEATURES if k in made}
            return (
                [chosen, *(m for m in ranking if m != chosen)],
                made["propensity"],
                made["explored"],
                arm,
            )

        return explore

    def record(
        self,
        rid: str,
        route: RouteResult | None,
        model: str,
        text: str,
        usage: dict | None,
        cost_usd: float | None,
        latency_ms: float,
        status: int = 200,
        fallbacks: int = 0,
        propensity: float = 1.0,
        explored: bool = False,
        arm: dict[str, Any] | None = None,
    ) -> None:
        """Queue the decision of one answered request (never blocks); ``arm``: its served
        A/B arm, kept with the features so that its feedback event carries it."""
        now = time.time()
        usage = usage or {}
        features, cell = None, None
        if route is not None:
            logged = route.logged or {}
            if "prior_performance" in logged:  # the router's own prior: no recomputing
                features, cell = dict(logged), int(logged.get("cell", 0))
            else:
                features = {"performance": route.performance, "cost": route.cost}
            if arm:
                features.update(arm)
        self.log.submit(
            Decision(
                request_id=rid,
                created_at=now,
                expires_at=now + self.store.ttl_s,
                router=self.service.router_name,
                router_version=self.router_version,
                pool=self.pool,
                model=model,
                policy=None if route is None else route.policy,
                utilities=None if route is None else route.utility,
                features=features,
                cell=cell,
                predicted_cost_usd=None if route is None else route.cost_usd.get(model),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                cost_usd=cost_usd,
                latency_ms=latency_ms,
                upstream_status=status,
                fallbacks=fallbacks,
                propensity=propensity,
                explored=explored,
            ),
            text,
        )

    def _prepare(self, items: list[Item]) -> None:
        """The online router's prior and cell of each logged query (writer thread): as the
        route carried them, or recomputed where it did not (a route the router did not
        make, e.g. a conversation kept on its model)."""
        router: OnlineRouter = self.service.router
        missing = []
        for decision, text in items:
            feats = decision.features or {}
            if "prior_performance" in feats:  # as the route carried them: kept as they are
                _set_prior(decision, feats["models"], feats["prior_performance"],
                           feats["prior_cost"], decision.cell, feats.get("embedding"))  # fmt: skip
            else:
                missing.append((decision, text))
        if missing:
            # as the service routes: embeddings from (and into) the bounded query LRU,
            # never a cache shard on disk per logged batch
            with get_encoder(router.encoder).transient():
                prior = router.logged_prior(router.features([text for _, text in missing]))
            for i, (decision, _) in enumerate(missing):
                embedding = prior["embedding"][i] if "embedding" in prior else None
                _set_prior(decision, prior["models"], prior["prior_performance"][i],
                           prior["prior_cost"][i], prior["cell"][i], embedding)  # fmt: skip

    # ----- feedback ----------------------------------------------------------------------------
    def add_feedback(self, feedback: Feedback, wait_s: float = 2.0) -> str:
        """Store one feedback event (blocking: call from a worker thread)."""
        status = self.store.add_feedback(feedback)
        if status == "unknown":
            if self.log.pending(feedback.request_id) is not None:
                self.log.wait_written(feedback.request_id, wait_s)
            else:  # maybe in another worker's queue: one flush interval and a margin
                time.sleep(min(wait_s, 2 * self.log.interval_s + 0.1))
            status = self.store.add_feedback(feedback)
        self.metrics.feedback.labels(status=status).inc()
        if status == "accepted" and self.learner is not None:
            self.learner.wake()
        return status

    def start(self) -> None:
        if self.learner is not None:
            self.learner.start()

    def close(self) -> None:
        if self.learner is not None:
            self.learner.close()
        self.log.close()
