"""Prometheus metrics of the routing proxy.

Each proxy app owns its own registry, so several apps (e.g. in tests) never share counts and
``/metrics`` shows exactly one server's traffic. Label values are bounded: policies and pool
model names come from configuration, never from request text.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

#: Routing overhead is milliseconds when idle and grows under load: fine buckets at the low end.
OVERHEAD_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProxyMetrics:
    """Counters and histograms the proxy updates; ``render()`` gives the exposition text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.routed_share = Gauge(
            "trouter_routed_share",
            "Share of routed requests answered by each pool model.",
            ["model"],
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
        self._lock = threading.Lock()
        self._answered: dict[str, int] = {}

    def record_answer(self, policy: str, model: str, routed: bool) -> None:
        self.routed.labels(policy=policy, model=model).inc()
        if not routed:
            return
        with self._lock:
            self._answered[model] = self._answered.get(model, 0) + 1
            total = sum(self._answered.values())
            for name, count in self._answered.items():
                self.routed_share.labels(model=name).set(count / total)

    def record_cost(self, model: str, usd: float | None) -> None:
        if usd is not None and usd > 0:
            self.cost.labels(model=model).inc(usd)

    def render(self) -> bytes:
        return generate_latest(self.registry)
