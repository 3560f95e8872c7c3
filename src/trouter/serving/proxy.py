"""The OpenAI-compatible routing proxy (``trouter serve``).

``POST /v1/chat/completions`` takes a standard chat request and passes it through small
steps, each in its own module:

1. the connection and request head (:mod:`.limits`: head size, count and time, connections,
   ``Host`` allow-list, cross-origin refusal);
2. the client key (:mod:`.auth`: 401 without a known key when keys are configured);
3. the body (:mod:`.requests`: JSON media type, size, deadline, shape; unknown OpenAI fields
   are kept and forwarded);
4. the plan (:mod:`.planning`): the policy (``model`` = ``trouter``, ``trouter-<scenario>``
   or ``trouter-<w_perf>:<w_cost>``, or the ``x-trouter-policy`` header; a pool model's name
   calls that model directly), the router's ranking on the conversation's task, the models
   that can take the request, the USD budget, and the model a running tool loop is on;
5. the upstream calls with fallback (:mod:`.forwarding`), cancelled if the client leaves;
6. the charge to the key's daily budget, metrics, and the reply.

OpenAI-compatible upstreams (``litellm_model: openai/...``) are called over one pooled
aiohttp client by default; other providers go through LiteLLM (``ProxySettings.upstream``).
The reply names the model that answered in its ``model`` field and the ``x-trouter-model``
header. Errors use OpenAI's body shape ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from trouter.llm.pool import ModelEndpoint, Pool
from trouter.serving import upstream
from trouter.serving.auth import ClientKey, KeyRing
from trouter.serving.background import BackgroundLabeller, labeller_for
from trouter.serving.background_settings import BackgroundSettings
from trouter.serving.batching import RouteBatcher
from trouter.serving.capabilities import pool_capabilities
from trouter.serving.conversation import Sessions
from trouter.serving.forwarding import ClientGone, Forwarder, client_closed, unless_client_leaves
from trouter.serving.learning import (
    REQUEST_ID_HEADER,
    FeedbackLoop,
    request_id,
    response_fields,
    response_headers,
)
from trouter.serving.limits import Limits, refusal, wrap
from trouter.serving.metrics import ProxyMetrics
from trouter.serving.planning import Planner
from trouter.serving.policy import DEFAULT_MODEL, POLICY_MODELS, is_policy_model
from trouter.serving.requests import (
    ChatRequest,
    ProxyError,
    check_json_media_type,
    forward_params,
    invalid,
    parse_chat,
    read_json,
)
from trouter.serving.settings import ProxySettings
from trouter.serving.upstreams import Upstreams

log = logging.getLogger("trouter.serving")

CHAT_PATH = "/v1/chat/completions"
__all__ = ["CHAT_PATH", "POLICY_MODELS", "ProxyApp", "ProxySettings", "create_app"]


def create_app(
    service,
    pool: Pool,
    settings: ProxySettings | None = None,
    keys: KeyRing | None = None,
    feedback: FeedbackLoop | None = None,
    background: BackgroundSettings | None = None,
) -> ProxyApp:
    """The proxy app for a routing service and the pool serving it.

    Refuses to start when a pool entry names a key variable that is not set. Without
    ``keys`` (or with an empty key ring) every client is served. With ``feedback`` every
    routed decision is logged, ``POST /v1/feedback`` is served, and an online router learns.
    """
    settings = settings or ProxySettings()
    keys = keys or KeyRing([])
    endpoints = _endpoints(service, pool)
    metrics = ProxyMetrics()
    for name, sides in pool.unpriced().items():
        metrics.unpriced.labels(model=name, missing="+".join(sides)).set(1)
    batcher = RouteBatcher(
        service,
        max_batch=settings.max_batch,
        after_batch=lambda: metrics.record_cache(service.query_cache()),
    )
    upstreams = Upstreams(
        endpoints, settings.upstream_limits(), settings.upstream, settings.upstream_timeout_s,
        registry=metrics.registry,
    )  # fmt: skip
    guard = upstreams.guard
    planner = Planner(
        batcher,
        endpoints,
        pool_capabilities({m: endpoints[m] for m in service.models}),
        Sessions(settings.max_sessions, settings.session_ttl_s),
        keys,
        settings.max_attempts,
        guard.ranked,
        explore=feedback.explorer() if feedback is not None else None,
    )
    forwarder = Forwarder(endpoints, upstreams.complete, upstreams.open_stream, metrics)
    labeller = None
    if background is not None and feedback is not None:
        labeller = labeller_for(
            background, feedback, endpoints, upstreams.complete, settings, metrics
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()
        if labeller is not None:
            await labeller.close()
        await upstreams.aclose()
        if feedback is not None:
            feedback.close()  # writes what is queued

    # FastAPI's native OpenTelemetry looks up its providers (and os.environ) per request:
    # 8% of the proxy's CPU at 200 in flight; /metrics is the proxy's own telemetry.
    telemetry = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="trouter routing proxy", lifespan=lifespan, telemetry=telemetry)
    app.state.metrics, app.state.service, app.state.settings = metrics, service, settings
    app.state.sessions = planner.sessions
    app.state.upstream_guard = guard
    _add_routes(app, service, endpoints, metrics)
    if feedback is not None:
        feedback.attach(app, metrics.registry)
    handler = ChatHandler(settings, keys, planner, forwarder, metrics, endpoints, feedback)
    handler.background = app.state.background = labeller

    @app.post(CHAT_PATH)
    async def chat(request: Request) -> Response:
        """Reached only by spellings ProxyApp does not take itself (and in the schema)."""
        return await handler(request, getattr(request.state, "client", None))

    return ProxyApp(app, handler, keys, settings.limits)


def _endpoints(service, pool: Pool) -> dict[str, ModelEndpoint]:
    """The pool's models by name; a routed model outside the pool, or a key variable that
    is not set, refuses the start."""
    endpoints = {e.name: e for e in pool.models}
    missing = [m for m in service.models if m not in endpoints]
    if missing:
        raise ValueError(f"routed models {missing} are not in the pool {sorted(endpoints)}")
    unset = upstream.missing_keys(list(endpoints.values()))
    if unset:
        raise ValueError(f"API key environment variables are not set for: {', '.join(unset)}")
    return endpoints


def _add_routes(app: FastAPI, service, endpoints: dict, metrics: ProxyMetrics) -> None:
    """Everything but the chat endpoint: health, metrics, models, and the error handlers."""

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, err: ProxyError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else None
        return ProxyError(
            err.status_code, str(err.detail), "invalid_request_error", code
        ).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return invalid(f"invalid request: {err.errors()[:3]}").response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        return internal_error(err)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "router": service.router_name,
            "routed_models": service.models,
            "pool_models": list(endpoints),
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.record_cache(service.query_cache())
        return Response(metrics.render(), media_type=metrics.content_type)

    model_ids = [DEFAULT_MODEL, *POLICY_MODELS, *endpoints]

    def card(model_id: str) -> dict[str, Any]:
        owner = "pool" if model_id in endpoints else "trouter"
        return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [card(i) for i in model_ids]}

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> dict[str, Any]:
        if model_id in endpoints or is_policy_model(model_id):
            return card(model_id)
        raise ProxyError(
            404, f"model {model_id!r} does not exist", "invalid_request_error", "model_not_found"
        )


class ChatHandler:
    """``POST /v1/chat/completions``: read, plan, forward, charge, count."""

    def __init__(self, settings, keys, planner, forwarder, metrics, endpoints, feedback=None):
        self.settings, self.keys, self.planner = settings, keys, planner
        self.forwarder, self.metrics, self.endpoints = forwarder, metrics, endpoints
        self.feedback: FeedbackLoop | None = feedback
        self.background: BackgroundLabeller | None = None

    async def __call__(self, request: Request, client: ClientKey | None) -> Response:
        started = time.perf_counter()
        label = "invalid"
        try:
            check_json_media_type(request.headers.get("content-type"))
            raw = await read_json(
                request, self.settings.max_body_bytes, self.settings.limits.body_timeout_s
            )
            if isinstance(raw, dict) and isinstance(raw.get("model"), str):
                label = self._label(raw["model"])
            req = parse_chat(raw)
            response = await unless_client_leaves(
                request.receive, self._handle(req, raw, request.headers, client, label, started)
            )
        except ProxyError as err:
            self.metrics.requests.labels(policy=label, status=str(err.status)).inc()
            return err.response()
        except ClientGone:
            self.metrics.record_client_abort(label, streamed=raw.get("stream") is True)
            return client_closed()
        except ClientDisconnect:  # left while sending the body
            self.metrics.record_client_abort(label, streamed=False)
            return client_closed()
        if not getattr(response, "counted_at_end", False):
            self.metrics.requests.labels(policy=label, status=str(response.status_code)).inc()
        return response

    def _label(self, model: str) -> str:
        """The metrics label of a requested model (custom weights share one label)."""
        if model in POLICY_MODELS or model in self.endpoints or model == DEFAULT_MODEL:
            return model
        return "trouter-weights" if is_policy_model(model) else "unknown"

    async def _handle(self, req: ChatRequest, raw, headers, client, label, started) -> Response:
        plan = await self.planner.plan(req, raw, headers, client)
        routing_ms = (time.perf_counter() - started) * 1000
        if plan.routed:
            self.metrics.overhead.observe(routing_ms / 1000)
        if plan.sticky:
            self.metrics.sticky.inc()
        reply_headers = {
            "x-trouter-policy": req.model,
            "x-trouter-routing-ms": f"{routing_ms:.2f}",
        }
        if client is not None:
            reply_headers["x-trouter-key"] = client.name
        rid = request_id(headers.get(REQUEST_ID_HEADER))
        first = response_fields(rid, plan.route, plan.candidates[0], req.model, None, plan.explored)
        reply_headers.update(response_headers(first))  # what a stream's head can say

        def on_answer(model: str, usage: dict | None) -> dict:
            usd = upstream.usage_cost(self.endpoints[model], usage)
            self.metrics.record_cost(model, usd)
            self.keys.charge(client, usd)
            if client is not None and usd:
                self.metrics.client_cost.labels(client=client.name).inc(usd)
            if plan.session is not None:
                self.planner.sessions.remember(plan.session, model)
            fields = response_fields(rid, plan.route, model, req.model, usd, plan.explored)
            reply_headers.update(response_headers(fields))
            if self.feedback is not None and plan.routed:
                fallbacks = plan.candidates.index(model)
                self.feedback.answered(rid, plan, model, usage, usd, started, fallbacks)
            return fields

        # validated above; forwarded as the client sent them, unknown fields included
        messages, params = raw["messages"], forward_params(raw)
        if not req.stream:
            response = await self.forwarder.reply(plan, messages, params, reply_headers, on_answer)
            if self.background is not None and plan.routed:  # runs once the reply is sent
                response.background = BackgroundTask(
                    self.background.offer, rid, plan, messages, response.body
                )
            return response

        def on_end(status: int) -> None:
            if status == 200:
                self.metrics.requests.labels(policy=label, status="200").inc()
            else:
                self.metrics.record_client_abort(label, streamed=True)

        wants_usage = bool((req.stream_options or {}).get("include_usage"))
        labelled = self.background is not None and plan.routed
        collected: dict | None = {} if labelled else None  # the answer, as it streams out
        response = await self.forwarder.stream(
            plan, messages, params, reply_headers, wants_usage, on_answer, on_end, collected
        )
        if labelled:  # runs once the stream has ended
            response.background = BackgroundTask(
                self.background.offer_stream, rid, plan, messages, collected
            )
        response.counted_at_end = True  # type: ignore[attr-defined]
        return response


class ProxyApp:
    """The FastAPI app behind the proxy's own checks, with the chat endpoint answered first.

    Every HTTP request passes Starlette's Host allow-list, the cross-origin refusal and, for
    ``/v1/*`` when keys are configured, the key check. ``POST /v1/chat/completions`` is then
    answered directly: through FastAPI's middleware, exception and dependency layers (about
    twenty nested coroutines, all resumed at every await of the handler) it spent a third of
    the proxy's CPU at 200 in flight. Everything else (and other spellings of the path) is
    FastAPI's.
    """

    def __init__(self, api: FastAPI, chat: ChatHandler, keys: KeyRing, limits: Limits) -> None:
        self.api, self._chat, self._keys, self.limits = api, chat, keys, limits
        self.state = api.state
        self._entry = wrap(self._checked, limits)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)  # lifespan
            return
        await self._entry(scope, receive, send)

    async def _checked(self, scope, receive, send) -> None:
        request = Request(scope, receive, send)
        client = None
        try:
            if (refused := refusal(request.headers, self.limits)) is not None:
                raise refused
            if self._keys.enabled and scope["path"].startswith("/v1/"):
                client = self._authenticate(request)
                scope.setdefault("state", {})["client"] = client
        except ProxyError as err:
            self.state.metrics.requests.labels(policy="rejected", status=str(err.status)).inc()
            await err.response()(scope, receive, send)
            return
        if scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.api(scope, receive, send)
            return
        try:
            response = await self._chat(request, client)
        except Exception as err:  # noqa: BLE001  (as FastAPI's handler: an OpenAI-style 500)
            response = internal_error(err)
        await response(scope, receive, send)

    def _authenticate(self, request: Request) -> ClientKey:
        client = self._keys.identify(request.headers.get("authorization"))
        if client is None:
            raise ProxyError(
                401,
                "missing or unknown API key: send 'Authorization: Bearer <key>' with a key "
                "from the proxy's keys file (trouter keys add NAME --file FILE)",
                "invalid_request_error",
                "invalid_api_key",
            )
        return client


def internal_error(err: Exception) -> JSONResponse:
    log.exception("internal error", exc_info=err)
    return ProxyError(
        500, f"internal proxy error: {type(err).__name__}", "server_error", "internal_error"
    ).response()
