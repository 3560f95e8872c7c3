"""The proxy's settings: request limits, upstream calls, batching and sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from trouter.serving.isolation import UpstreamLimits
from trouter.serving.limits import Limits


@dataclass
class ProxySettings:
    max_body_bytes: int = 1_000_000
    max_attempts: int = 3
    upstream_timeout_s: float = 60.0
    max_batch: int = 64
    #: ``auto``: OpenAI-compatible upstreams over the shared aiohttp client, others through
    #: LiteLLM; ``httpx``: the same over an httpx client; ``litellm``: every call via LiteLLM.
    upstream: Literal["auto", "httpx", "litellm"] = "auto"
    #: conversations remembered for tool loops and ``x-trouter-session`` (LRU, with a TTL)
    max_sessions: int = 10_000
    session_ttl_s: float = 3600.0
    limits: Limits = field(default_factory=Limits)
    #: per pool model: calls in flight at once, and the cooldown after repeated failures
    max_in_flight_per_model: int = UpstreamLimits.max_in_flight
    cooldown_failures: int = UpstreamLimits.cooldown_failures
    cooldown_window_s: float = UpstreamLimits.cooldown_window_s
    cooldown_s: float = UpstreamLimits.cooldown_s

    def upstream_limits(self) -> UpstreamLimits:
        """Each pool model's in-flight limit and cooldown, as the upstream guard takes them."""
        return UpstreamLimits(
            self.max_in_flight_per_model,
            self.cooldown_failures,
            self.cooldown_window_s,
            self.cooldown_s,
        )
