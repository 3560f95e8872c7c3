"""Prometheus metrics of the routing proxy.

Each proxy app owns its own registry, so several apps (e.g. in tests) never share counts and
``/metrics`` shows exactly one server's traffic. With ``trouter serve --workers N`` the
workers write their values to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode) and ``/metrics``, whichever worker answers it, shows the sum over all.

Label values are bounded, so memory does not grow with traffic: policies and pool model
names come from configuration, statuses and error kinds from small fixed sets, never from
request text. Shares and the embedding-cache hit rate are computed from the counters when
``/metrics`` is read, so they are right across workers too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from trouter.encoders import QueryCache

#: Routing overhead is sub-millisecond when idle and grows under load: fine low buckets.
OVERHEAD_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
ROUTED_PREFIX = "trouter-"


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class ProxyMetrics:
    """Counters and histograms the proxy updates; ``render()`` gives the exposition text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._traffic_metrics(self.registry)
        self._cache_metrics(self.registry)
        self._client_metrics(self.registry)
        self._seen = (0, 0)

    def _traffic_metrics(self, r: CollectorRegistry) -> None:
        """Requests, answers, upstream errors and fallbacks, cost and latency."""
        self.requests = Counter(
            "trouter_requests",
            "Chat completion requests by requested model/policy and status.",
            ["policy", "status"],
            registry=r,
        )
        self.routed = Counter(
            "trouter_routed_requests",
            "Requests answered per pool model (after any fallback).",
            ["policy", "model"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "trouter_upstream_errors",
            "Failed upstream calls by pool model and kind.",
            ["model", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "trouter_fallbacks", "Upstream calls retried on the next-best model.", registry=r
        )
        self.cost = Counter(
            "trouter_cost_usd",
            "Upstream cost in USD from token usage and pool prices.",
            ["model"],
            registry=r,
        )
        self.overhead = Histogram(
            "trouter_routing_overhead_seconds",
            "Time from request arrival to the routing decision (parse, encode, predict).",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "trouter_upstream_latency_seconds",
            "Upstream call time until the reply or first chunk.",
            ["model"],
            registry=r,
        )

    def _cache_metrics(self, r: CollectorRegistry) -> None:
        """The query-embedding LRU."""
        self.cache_lookups = Counter(
            "trouter_embedding_cache_lookups",
            "Query-embedding cache lookups by result (hit: the prompt was seen recently).",
            ["result"],
            registry=r,
        )
        for result in ("hit", "miss"):  # both series exist from the start
            self.cache_lookups.labels(result=result)
        self.cache_entries = Gauge(
            "trouter_embedding_cache_entries",
            "Query embeddings held in the bounded LRU (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "trouter_embedding_cache_bytes",
            "Bytes of query embeddings held in the bounded LRU (summed over live workers).",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _client_metrics(self, r: CollectorRegistry) -> None:
        """Clients who left, sessions, per-client cost, and unpriced pool models."""
        self.client_aborted = Counter(
            "trouter_client_aborted_requests",
            "Requests whose client left before the reply was complete (also counted as "
            "status 499 in trouter_requests); the upstream call was cancelled.",
            ["streamed"],
            registry=r,
        )
        for streamed in ("true", "false"):
            self.client_aborted.labels(streamed=streamed)
        self.sticky = Counter(
            "trouter_session_sticky_requests",
            "Routed requests kept on their conversation's model (tool loop or x-trouter-session).",
            registry=r,
        )
        self.client_cost = Counter(
            "trouter_client_cost_usd",
            "Upstream cost in USD per client key (names from the keys file).",
            ["client"],
            registry=r,
        )
        self.unpriced = Gauge(
            "trouter_pool_model_unpriced",
            "1 per pool model whose calls cannot be priced (missing: input, output or both "
            "prices); its cost is unknown and not counted, never $0.",
            ["model", "missing"],
            registry=r,
            multiprocess_mode="max",
        )

    def record_answer(self, policy: str, model: str, routed: bool) -> None:
        self.routed.labels(policy=policy, model=model).inc()

    def record_client_abort(self, policy: str, streamed: bool) -> None:
        self.client_aborted.labels(streamed=str(streamed).lower()).inc()
        self.requests.labels(policy=policy, status="499").inc()

    def record_cost(self, model: str, usd: float | None) -> None:
        if usd is not None and usd > 0:
            self.cost.labels(model=model).inc(usd)

    def record_cache(self, cache: QueryCache) -> None:
        """Bring the cache counters up to the LRU's own counts (called from one loop)."""
        hits, misses = cache.hits, cache.misses
        if hits > self._seen[0]:
            self.cache_lookups.labels(result="hit").inc(hits - self._seen[0])
        if misses > self._seen[1]:
            self.cache_lookups.labels(result="miss").inc(misses - self._seen[1])
        self._seen = (hits, misses)
        self.cache_entries.set(len(cache))
        self.cache_bytes.set(cache.bytes)

    def render(self) -> bytes:
        if multiprocess():
            from prometheus_client import multiprocess as mp

            source = CollectorRegistry()
            mp.MultiProcessCollector(source)
        else:
            source = self.registry
        families = list(source.collect())
        out = CollectorRegistry(auto_describe=False)
        out.register(_Fixed([*families, *_derived(families)]))
        return generate_latest(out)


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _derived(families: list[Metric]) -> list[Metric]:
    """Shares of routed answers per model and the embedding cache's hit rate."""
    answered: dict[str, float] = {}
    lookups: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == "trouter_routed_requests_total" and sample.labels.get(
                "policy", ""
            ).startswith(ROUTED_PREFIX):
                model = sample.labels["model"]
                answered[model] = answered.get(model, 0.0) + sample.value
            elif sample.name == "trouter_embedding_cache_lookups_total":
                lookups[sample.labels["result"]] = sample.value
    share = GaugeMetricFamily(
        "trouter_routed_share",
        "Share of routed requests answered by each pool model.",
        labels=["model"],
    )
    total = sum(answered.values())
    for model, count in sorted(answered.items()):
        share.add_metric([model], count / total if total else 0.0)
    rate = GaugeMetricFamily(
        "trouter_embedding_cache_hit_rate",
        "Share of query-embedding lookups answered from the LRU (0 before any lookup).",
    )
    seen = lookups.get("hit", 0.0) + lookups.get("miss", 0.0)
    rate.add_metric([], lookups.get("hit", 0.0) / seen if seen else 0.0)
    return [share, rate]
