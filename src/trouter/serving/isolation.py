"""Keeping one slow or dead upstream model from holding up the others.

Two bounds per pool model, on both upstream paths (direct HTTP and LiteLLM):

- **In-flight calls.** At most ``max_in_flight`` calls to one model at a time, streams counted
  until they end. A call beyond that is refused at once with a retryable ``overloaded`` error
  (503 and ``Retry-After: 1`` when it is the last candidate), so the proxy falls back to the
  next model in the ranking instead of queueing behind a hung one. The connection pool of each
  upstream host is sized to the sum of these bounds over the models it serves
  (:func:`host_limits`), so a model at its bound never starves another model on the same host.
- **Cooldown.** ``cooldown_failures`` failed calls (timeouts, connection errors, 5xx,
  malformed replies, refused keys) within ``cooldown_window_s`` with no success in between
  take the model out for ``cooldown_s``: calls are refused with a retryable ``cooldown`` error
  and routed requests try their other candidates first. After the cooldown one trial call is let
  through; its success closes the breaker, its failure starts another cooldown. 429s and request
  errors are the caller's and never count.

State is per process (each ``--workers`` process keeps its own) and is exported as Prometheus
gauges on the proxy's registry: ``trouter_upstream_in_flight{model}``,
``trouter_upstream_cooldown_until_seconds{model}`` (Unix time the cooldown ends, 0 when the
model is in service) and the counter ``trouter_upstream_cooldowns_total{model}``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge

from trouter.llm.pool import ModelEndpoint
from trouter.serving.upstream import UpstreamError

T = TypeVar("T")
#: Failure kinds that say the upstream itself is unwell (429 and 4xx are the caller's).
COUNTED_KINDS = frozenset({"timeout", "connection", "server", "malformed", "auth"})
OPENAI_ORIGIN = "https://api.openai.com"


@dataclass(frozen=True)
class UpstreamLimits:
    """Per-model bounds; ``cooldown_failures=0`` turns the cooldown off."""

    max_in_flight: int = 256
    cooldown_failures: int = 5
    cooldown_window_s: float = 60.0
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")
        if self.cooldown_failures < 0 or self.cooldown_window_s <= 0 or self.cooldown_s < 0:
            raise ValueError(
                "cooldown_failures must be >= 0, cooldown_window_s > 0 and cooldown_s >= 0"
            )


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the key of one upstream connection pool."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def host_limits(endpoints: Iterable[ModelEndpoint], max_in_flight: int) -> dict[str, int]:
    """Connections per upstream origin: the in-flight bound times the models it serves."""
    limits: dict[str, int] = {}
    for endpoint in endpoints:
        key = origin(endpoint.api_base or OPENAI_ORIGIN)
        limits[key] = limits.get(key, 0) + max_in_flight
    return limits


@dataclass
class Breaker:
    """The cooldown state of one model (see the module docstring)."""

    limits: UpstreamLimits
    failures: deque[float] = field(default_factory=deque)
    open_until: float = 0.0  # 0: in service; else the monotonic time the cooldown ends
    probing: bool = False  # the one trial call after a cooldown is in flight

    def refusal(self, now: float) -> float | None:
        """Seconds to wait if a call must be refused now; None admits it."""
        if not self.open_until:
            return None
        if now < self.open_until:
            return self.open_until - now
        if self.probing:
            return 1.0  # the trial call decides
        self.probing = True
        return None

    def record(self, failed: bool, now: float) -> bool:
        """Note a finished call; True when this failure starts a cooldown."""
        was_probe, self.probing = self.probing, False
        if not failed:
            self.failures.clear()
            self.open_until = 0.0
            return False
        if was_probe:
            self.open_until = now + self.limits.cooldown_s
            return True
        if not self.limits.cooldown_failures or self.open_until:
            return False
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.limits.cooldown_window_s:
            self.failures.popleft()
        if len(self.failures) < self.limits.cooldown_failures:
            return False
        self.failures.clear()
        self.open_until = now + self.limits.cooldown_s
        return True

    def abandon(self) -> None:
        """A call ended without a verdict (the client left): let another trial through."""
        self.probing = False


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.in_flight = Gauge(
            "trouter_upstream_in_flight",
            "Upstream calls in flight per pool model (streams until they end).",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.cooldown_until = Gauge(
            "trouter_upstream_cooldown_until_seconds",
            "Unix time a pool model's cooldown ends; 0 while it is in service.",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.cooldowns = Counter(
            "trouter_upstream_cooldowns",
            "Cooldowns started per pool model after repeated upstream failures.",
            ["model"],
            registry=registry,
        )


class UpstreamGuard:
    """In-flight bounds and cooldowns for the pool's models (one per proxy app)."""

    def __init__(
        self,
        limits: UpstreamLimits,
        models: Iterable[str],
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.in_flight: dict[str, int] = {}
        self.breakers: dict[str, Breaker] = {}
        self._metrics = _Metrics(registry) if registry is not None else None
        for model in models:
            self.in_flight[model] = 0
            self.breakers[model] = Breaker(limits)
            if self._metrics is not None:  # every series exists from the start
                self._metrics.in_flight.labels(model=model).set(0)
                self._metrics.cooldown_until.labels(model=model).set(0)
                self._metrics.cooldowns.labels(model=model)

    def cooling_down(self, model: str) -> bool:
        breaker = self.breakers.get(model)
        return breaker is not None and self.clock() < breaker.open_until

    def ranked(self, models: Iterable[str]) -> list[str]:
        """``models`` in their order, those cooling down moved to the end."""
        return sorted(models, key=self.cooling_down)  # stable: the order holds within each

    async def complete(self, model: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one non-streamed call under the model's bounds."""
        slot = self._admit(model)
        result = await _settle(slot, call)
        slot.finish(None)
        return result

    async def open_stream(
        self,
        model: str,
        call: Callable[[], Awaitable[tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]]],
    ) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
        """Open a stream under the model's bounds; its slot is held until the stream ends."""
        slot = self._admit(model)
        head, rest = await _settle(slot, call)
        return head, HeldStream(rest, slot)

    def _admit(self, model: str) -> _Slot:
        if model not in self.breakers:  # not in the pool: nothing to bound
            self.in_flight[model] = 0
            self.breakers[model] = Breaker(self.limits)
        wait = self.breakers[model].refusal(self.clock())
        if wait is not None:
            raise UpstreamError(
                model,
                "cooldown",
                503,
                f"skipped for {wait:.0f} s after repeated upstream failures",
                True,
                str(max(1, math.ceil(wait))),
            )
        if self.in_flight[model] >= self.limits.max_in_flight:
            raise UpstreamError(
                model,
                "overloaded",
                503,
                f"{self.limits.max_in_flight} calls to this model are already in flight",
                True,
                "1",
            )
        self._set_in_flight(model, self.in_flight[model] + 1)
        return _Slot(self, model)

    def _finish(self, model: str, error: UpstreamError | None, abandoned: bool) -> None:
        self._set_in_flight(model, self.in_flight[model] - 1)
        breaker = self.breakers[model]
        if abandoned:
            breaker.abandon()
            return
        failed = error is not None and error.kind in COUNTED_KINDS
        if error is not None and not failed:
            breaker.abandon()  # a 429 or request error says nothing about the upstream's health
            return
        now = self.clock()
        started = breaker.record(failed, now)
        if self._metrics is None:
            return
        if started:
            self._metrics.cooldowns.labels(model=model).inc()
        until = time.time() + (breaker.open_until - now) if breaker.open_until else 0.0
        self._metrics.cooldown_until.labels(model=model).set(until)

    def _set_in_flight(self, model: str, value: int) -> None:
        self.in_flight[model] = value
        if self._metrics is not None:
            self._metrics.in_flight.labels(model=model).set(value)


async def _settle(slot: _Slot, call: Callable[[], Awaitable[T]]) -> T:
    """``call()``'s result; if it fails, the slot is finished with the failure first."""
    try:
        return await call()
    except UpstreamError as err:
        slot.finish(err)
        raise
    except BaseException:
        slot.finish(None, abandoned=True)
        raise


class _Slot:
    """One admitted call; :meth:`finish` releases it exactly once."""

    def __init__(self, guard: UpstreamGuard, model: str) -> None:
        self.guard, self.model, self.open = guard, model, True

    def finish(self, error: UpstreamError | None, abandoned: bool = False) -> None:
        if self.open:
            self.open = False
            self.guard._finish(self.model, error, abandoned)

    def __del__(self) -> None:  # a stream dropped without being read or closed
        self.finish(None, abandoned=True)


class HeldStream:
    """A stream's remaining chunks, holding its model's in-flight slot until it ends."""

    def __init__(self, rest: AsyncIterator[dict[str, Any]], slot: _Slot) -> None:
        self._rest, self._slot = rest, slot

    def __aiter__(self) -> HeldStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await anext(self._rest)
        except StopAsyncIteration:
            self._slot.finish(None)
            raise
        except UpstreamError as err:
            self._slot.finish(err)
            raise

    async def aclose(self) -> None:
        try:
            close = getattr(self._rest, "aclose", None)
            if close is not None:
                await close()
        finally:
            self._slot.finish(None, abandoned=True)
