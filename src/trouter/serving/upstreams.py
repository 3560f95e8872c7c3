"""How the proxy calls a pool model: directly over its OpenAI-compatible API (a pooled
HTTP client) or through LiteLLM, always within the :class:`UpstreamGuard`'s per-model
limits and cooldowns, so that one hung or failing upstream never holds up another.
"""

from __future__ import annotations

from collections.abc import Mapping

from trouter.llm.pool import ModelEndpoint
from trouter.serving import upstream
from trouter.serving.isolation import UpstreamGuard, UpstreamLimits, host_limits
from trouter.serving.openai_http import make_client, speaks_openai


class Upstreams:
    """``complete`` and ``open_stream`` for every pool model (see module). ``transport``:
    ``aiohttp`` or ``httpx`` for the direct path; ``litellm`` sends every call through
    LiteLLM."""

    def __init__(
        self,
        endpoints: Mapping[str, ModelEndpoint],
        limits: UpstreamLimits,
        transport: str,
        timeout_s: float,
        registry=None,
    ) -> None:
        self.through_litellm, self.timeout_s = transport == "litellm", float(timeout_s)
        self.guard = UpstreamGuard(limits, dict(endpoints), registry=registry)
        per_host = host_limits(endpoints.values(), limits.max_in_flight)
        kind = "httpx" if transport == "httpx" else "aiohttp"
        self.client = make_client(kind, self.timeout_s, host_limits=per_host)
        if not all(self.direct(e) for e in endpoints.values()):
            upstream.litellm_module()  # imported now, not by the first request that needs it

    def direct(self, endpoint: ModelEndpoint) -> bool:
        """Whether ``endpoint`` is called over its own API rather than through LiteLLM."""
        return not self.through_litellm and speaks_openai(endpoint)

    async def complete(self, endpoint: ModelEndpoint, messages: list[dict], params: dict) -> dict:
        if self.direct(endpoint):
            call = lambda: self.client.complete(endpoint, messages, params)  # noqa: E731
        else:
            call = lambda: upstream.complete(endpoint, messages, params, self.timeout_s)  # noqa: E731
        return await self.guard.complete(endpoint.name, call)

    async def open_stream(self, endpoint: ModelEndpoint, messages: list[dict], params: dict):
        if self.direct(endpoint):
            call = lambda: self.client.open_stream(endpoint, messages, params)  # noqa: E731
        else:
            call = lambda: upstream.open_stream(endpoint, messages, params, self.timeout_s)  # noqa: E731
        return await self.guard.open_stream(endpoint.name, call)

    async def aclose(self) -> None:
        await self.client.aclose()
