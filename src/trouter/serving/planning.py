"""From an accepted chat request to the pool models to try, best first.

The steps, each a small function of its own module: the policy (:mod:`.policy`), the routing
text (:mod:`.conversation`), the router's ranking, the models that can take the request
(:mod:`.capabilities`), the budget in USD (the request's ``x-trouter-max-cost-usd``; a client key
whose daily budget is spent gets 429), and the conversation's model while a tool loop runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trouter.llm.pool import ModelEndpoint
from trouter.serving.api import RouteResult, RoutingRequestError
from trouter.serving.auth import ClientKey, KeyRing
from trouter.serving.batching import RouteBatcher
from trouter.serving.capabilities import ModelCapabilities
from trouter.serving.conversation import (
    SESSION_HEADER,
    Needs,
    Sessions,
    in_tool_loop,
    needs,
    routing_text,
)
from trouter.serving.policy import (
    MAX_COST_HEADER,
    POLICY_HEADER,
    estimate_tokens,
    is_policy_model,
    max_cost,
    request_policy,
    within_budget,
)
from trouter.serving.requests import ChatRequest, ProxyError, invalid

#: Routed when a request holds no text at all (e.g. only an image): the policy's default.
NO_TEXT_QUERY = "Answer the user's request."


@dataclass
class Plan:
    requested: str  # the request's model field
    candidates: list[str]  # pool models to try, best first
    routed: bool
    session: tuple | None  # the conversation's key, to remember the answering model
    sticky: bool  # the first candidate is the conversation's model
    route: RouteResult | None = None  # the router's decision, for routed requests
    propensity: float = 1.0  # the probability that the first candidate was chosen
    explored: bool = False  # the first candidate is an exploration, not the best guess
    arm: dict[str, Any] | None = None  # the online router's served A/B arm, if drawn


@dataclass
class Planner:
    batcher: RouteBatcher
    endpoints: dict[str, ModelEndpoint]
    capabilities: dict[str, ModelCapabilities]
    sessions: Sessions
    keys: KeyRing
    max_attempts: int
    #: the upstream guard's order: models in cooldown after the others
    in_service_first: Callable[[Sequence[str]], list[str]] = list
    #: (text, policy, ranking) -> (ranking, propensity, explored, arm): an online router's
    #: capped exploration or served A/B draw
    #: (:meth:`trouter.serving.learning.FeedbackLoop.explorer`)
    explore: Callable[..., tuple[list[str], float, bool, dict]] | None = None

    def __post_init__(self) -> None:
        known = [c.max_input_tokens for c in self.capabilities.values() if c.max_input_tokens]
        self._smallest_context = min(known, default=2**62)

    async def plan(
        self,
        req: ChatRequest,
        raw: dict[str, Any],
        headers: dict[str, str],
        client: ClientKey | None,
    ) -> Plan:
        budget, why = self._budget(headers, client)
        request_needs = needs(raw, req.messages)
        if req.model in self.endpoints:
            candidates = [req.model]
            if budget is not None:
                within_budget(
                    candidates, self.endpoints, self._tokens(raw, request_needs), budget, why
                )
            return Plan(req.model, candidates, False, None, False)
        if not is_policy_model(req.model):
            raise ProxyError(
                404,
                f"model {req.model!r} does not exist; use trouter, trouter-<scenario>, "
                f"trouter-<w_perf>:<w_cost> or one of {', '.join(self.endpoints)}",
                "invalid_request_error",
                "model_not_found",
            )
        key = client.policy if client is not None else None
        policy = request_policy(req.model, headers.get(POLICY_HEADER), key)
        text = routing_text(req.messages) or NO_TEXT_QUERY
        try:
            route = await self.batcher.route(text, policy)
            ranking = list(route.ranking)
            propensity, explored, arm = 1.0, False, None
            if self.explore is not None:
                ranking, propensity, explored, arm = self.explore(text, policy, ranking)
        except RoutingRequestError as err:
            raise invalid(str(err), "unroutable_query") from err
        capable = self._capable(ranking, request_needs)
        if budget is not None:
            tokens = self._tokens(raw, request_needs)
            capable = within_budget(capable, self.endpoints, tokens, budget, why)
        session, sticky = self._session(req, raw, headers, client), False
        if session is not None and (headers.get(SESSION_HEADER) or in_tool_loop(req.messages)):
            held = self.sessions.get(session)
            if held in capable:
                capable.remove(held)
                capable.insert(0, held)
                sticky = True
        if not sticky:
            capable = self.in_service_first(capable)
        candidates = capable[: max(1, self.max_attempts)]
        if sticky or candidates[0] != ranking[0]:
            # the conversation's or a capable model: not the draw's
            propensity, explored, arm = 1.0, False, None
        return Plan(req.model, candidates, True, session, sticky, route, propensity, explored, arm)

    def _budget(
        self, headers: dict[str, str], client: ClientKey | None
    ) -> tuple[float | None, str]:
        """The request's USD limit; 429 once the key's daily budget is spent.

        The daily budget is checked before the call and charged with the call's real cost
        afterwards, so the last call of a day may take the spend past it.
        """
        remaining = self.keys.remaining_usd(client)
        if remaining is not None and remaining <= 0:
            assert client is not None
            raise ProxyError(
                429,
                f"the daily budget of ${client.daily_budget_usd:g} for key {client.name!r} is "
                "spent; it renews at 00:00 UTC",
                "insufficient_quota",
                "daily_budget_exceeded",
            )
        return max_cost(headers.get(MAX_COST_HEADER)), MAX_COST_HEADER

    @staticmethod
    def _session(req: ChatRequest, raw: dict, headers, client: ClientKey | None) -> tuple | None:
        """The conversation's key where it matters: with a session header, or when tools are
        offered (only then can a tool loop start or run)."""
        header = headers.get(SESSION_HEADER)
        if not header and not (raw.get("tools") or raw.get("functions")):
            return None
        return Sessions.key(client.name if client else "", header, raw["messages"])

    def _capable(self, ranking: list[str], request_needs: Needs) -> list[str]:
        if (
            not (request_needs.vision or request_needs.tools or request_needs.json_schema)
            and request_needs.input_tokens <= self._smallest_context
        ):
            return ranking  # nothing to rule out (the common case: a short text request)
        reasons = {m: self.capabilities[m].refuses(request_needs) for m in ranking}
        capable = [m for m in ranking if reasons[m] is None]
        if not capable:
            why = "; ".join(f"{m}: {r}" for m, r in reasons.items())
            raise invalid(
                f"no routed model can take this request ({request_needs.describe()}): {why}",
                "no_capable_model",
            )
        return capable

    @staticmethod
    def _tokens(raw: dict[str, Any], request_needs: Needs):
        return estimate_tokens(raw, request_needs.input_tokens)
