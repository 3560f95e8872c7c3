"""The OpenAI-compatible routing proxy (``trouter serve``).

``POST /v1/chat/completions`` takes a standard chat request. Its ``model`` field selects the
policy: ``trouter-balanced``, ``trouter-cost-first`` or ``trouter-performance-first`` route the
request; the name of a pool model sends it to that model directly (no routing, no fallback).

The routing query is the text of the **last user message** (text parts of a multi-part
message joined by newlines, cut to :data:`MAX_QUERY_CHARS`): it states the task being asked
now. System prompts and earlier turns are forwarded to the chosen model unchanged but do not
influence the choice (a system prompt usually describes the application, not the task).

The request is forwarded through LiteLLM; the reply names the model that answered in its
``model`` field and in the ``x-trouter-model`` header. If the chosen model fails with a
timeout, connection error, 5xx or malformed reply, the next model in the router's ranking is
tried (at most ``max_attempts`` calls in all); for streams this is possible until the first
chunk has been relayed. 429 and request errors (4xx) are passed through. Errors use OpenAI's
body shape ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from trouter.llm.pool import ModelEndpoint, Pool
from trouter.serving import upstream
from trouter.serving.api import RoutingRequestError, RoutingService, resolve_policy
from trouter.serving.batching import RouteBatcher
from trouter.serving.isolation import UpstreamGuard, UpstreamLimits, host_limits
from trouter.serving.metrics import ProxyMetrics
from trouter.serving.openai_http import make_client, speaks_openai
from trouter.serving.requests import (
    ChatRequest,
    ProxyError,
    forward_params,
    invalid,
    parse_chat,
    read_json,
    routing_query,
)

log = logging.getLogger("trouter.serving")

CHAT_PATH = "/v1/chat/completions"
POLICY_MODELS = {
    "trouter-balanced": "balanced",
    "trouter-cost-first": "cost-first",
    "trouter-performance-first": "performance-first",
}


@dataclass
class ProxySettings:
    max_body_bytes: int = 1_000_000
    max_attempts: int = 3
    upstream_timeout_s: float = 60.0
    max_batch: int = 64
    #: ``auto``: OpenAI-compatible upstreams over the shared aiohttp client, others through
    #: LiteLLM; ``httpx``: the same over an httpx client; ``litellm``: every call via LiteLLM.
    upstream: Literal["auto", "httpx", "litellm"] = "auto"
    #: per pool model: calls in flight at once, and the cooldown after repeated failures
    max_in_flight_per_model: int = UpstreamLimits.max_in_flight
    cooldown_failures: int = UpstreamLimits.cooldown_failures
    cooldown_window_s: float = UpstreamLimits.cooldown_window_s
    cooldown_s: float = UpstreamLimits.cooldown_s


def create_app(
    service: RoutingService, pool: Pool, settings: ProxySettings | None = None
) -> ProxyApp:
    """The proxy app for a routing service and the pool serving it.

    Refuses to start when a pool entry names a key variable that is not set.
    """
    settings = settings or ProxySettings()
    endpoints = {e.name: e for e in pool.models}
    missing = [m for m in service.models if m not in endpoints]
    if missing:
        raise ValueError(f"routed models {missing} are not in the pool {sorted(endpoints)}")
    unset = upstream.missing_keys(list(endpoints.values()))
    if unset:
        raise ValueError(f"API key environment variables are not set for: {', '.join(unset)}")
    metrics = ProxyMetrics()
    batcher = RouteBatcher(
        service,
        max_batch=settings.max_batch,
        after_batch=lambda: metrics.record_cache(service.query_cache()),
    )
    transport = "httpx" if settings.upstream == "httpx" else "aiohttp"
    limits = UpstreamLimits(
        settings.max_in_flight_per_model,
        settings.cooldown_failures,
        settings.cooldown_window_s,
        settings.cooldown_s,
    )
    guard = UpstreamGuard(limits, endpoints, registry=metrics.registry)
    per_host = host_limits(endpoints.values(), limits.max_in_flight)
    direct = make_client(transport, settings.upstream_timeout_s, host_limits=per_host)
    endpoint_list = list(endpoints.values())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()
        await direct.aclose()

    def _direct(endpoint: ModelEndpoint) -> bool:
        return settings.upstream != "litellm" and speaks_openai(endpoint)

    async def complete(endpoint: ModelEndpoint, messages: list[dict], params: dict) -> dict:
        if _direct(endpoint):
            call = lambda: direct.complete(endpoint, messages, params)  # noqa: E731
        else:
            timeout = settings.upstream_timeout_s
            call = lambda: upstream.complete(endpoint, messages, params, timeout)  # noqa: E731
        return await guard.complete(endpoint.name, call)

    async def open_stream(endpoint: ModelEndpoint, messages: list[dict], params: dict):
        if _direct(endpoint):
            call = lambda: direct.open_stream(endpoint, messages, params)  # noqa: E731
        else:
            timeout = settings.upstream_timeout_s
            call = lambda: upstream.open_stream(endpoint, messages, params, timeout)  # noqa: E731
        return await guard.open_stream(endpoint.name, call)

    # FastAPI's native OpenTelemetry looks up its providers (and os.environ) per request:
    # 8% of the proxy's CPU at 200 in flight; /metrics is the proxy's own telemetry.
    telemetry = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="trouter routing proxy", lifespan=lifespan, telemetry=telemetry)
    app.state.metrics, app.state.service, app.state.settings = metrics, service, settings

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

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        ids = [*POLICY_MODELS, *endpoints]
        return {
            "object": "list",
            "data": [
                {
                    "id": i,
                    "object": "model",
                    "created": 0,
                    "owned_by": "trouter" if i in POLICY_MODELS else "pool",
                }
                for i in ids
            ],
        }

    @app.post(CHAT_PATH)
    async def chat(request: Request) -> Response:
        started = time.perf_counter()
        label = "invalid"
        try:
            raw = await read_json(request, settings.max_body_bytes)
            if isinstance(raw, dict) and isinstance(raw.get("model"), str):
                name = raw["model"]
                label = name if name in POLICY_MODELS or name in endpoints else "unknown"
            response = await _handle(parse_chat(raw), raw, started)
        except ProxyError as err:
            metrics.requests.labels(policy=label, status=str(err.status)).inc()
            return err.response()
        metrics.requests.labels(policy=label, status=str(response.status_code)).inc()
        return response

    async def _handle(req: ChatRequest, raw: dict[str, Any], started: float) -> Response:
        if req.model in POLICY_MODELS:
            query = routing_query(req.messages)
            try:
                result = await batcher.route(query, resolve_policy(POLICY_MODELS[req.model]))
            except RoutingRequestError as err:
                raise invalid(str(err), "unroutable_query") from err
            candidates = guard.ranked(result.ranking)[: max(1, settings.max_attempts)]
            metrics.overhead.observe(time.perf_counter() - started)
        elif req.model in endpoints:
            candidates = [req.model]
        else:
            raise ProxyError(
                404,
                f"model {req.model!r} does not exist; use one of "
                f"{', '.join([*POLICY_MODELS, *endpoints])}",
                "invalid_request_error",
                "model_not_found",
            )
        routing_ms = (time.perf_counter() - started) * 1000
        # validated above; forwarded as the client sent them (dumping the models again cost
        # more than the validation)
        messages = raw["messages"]
        params = forward_params(raw)
        if req.stream:
            return await _stream(req, candidates, messages, params, routing_ms)
        errors: list[upstream.UpstreamError] = []
        for name in candidates:
            t0 = time.perf_counter()
            try:
                data = await complete(endpoints[name], messages, params)
            except upstream.UpstreamError as err:
                if not _note_failure(err, errors, candidates):
                    break
                continue
            metrics.upstream_latency.labels(model=name).observe(time.perf_counter() - t0)
            metrics.record_answer(req.model, name, routed=req.model in POLICY_MODELS)
            metrics.record_cost(name, upstream.usage_cost(endpoints[name], data.get("usage")))
            return JSONResponse(data, headers=_headers(name, req.model, len(errors), routing_ms))
        raise _final_error(errors)

    def _note_failure(err: upstream.UpstreamError, errors: list, candidates: list[str]) -> bool:
        """Record a failed call; True if the next candidate should be tried."""
        errors.append(err)
        metrics.upstream_errors.labels(model=err.model, kind=err.kind).inc()
        log.warning("upstream %s", upstream.scrub(str(err), endpoint_list))
        retry = err.retryable and len(errors) < len(candidates)
        if retry:
            metrics.fallbacks.inc()
        return retry

    def _final_error(errors: list[upstream.UpstreamError]) -> ProxyError:
        last = errors[-1]
        trail = "; ".join(str(e) for e in errors)
        message = upstream.scrub(f"upstream call failed ({trail})", endpoint_list)
        kinds = {
            "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
            "bad_request": ("invalid_request_error", "upstream_bad_request"),
            "timeout": ("upstream_error", "upstream_timeout"),
        }
        type_, code = kinds.get(last.kind, ("upstream_error", f"upstream_{last.kind}"))
        headers = {"retry-after": last.retry_after} if last.retry_after else None
        return ProxyError(last.status, message, type_, code, headers)

    async def _stream(
        req: ChatRequest,
        candidates: list[str],
        messages: list[dict],
        params: dict,
        routing_ms: float,
    ) -> Response:
        wants_usage = bool((req.stream_options or {}).get("include_usage"))
        params = {**params, "stream_options": {"include_usage": True}}
        errors: list[upstream.UpstreamError] = []
        for name in candidates:
            t0 = time.perf_counter()
            try:
                head, rest = await open_stream(endpoints[name], messages, params)
            except upstream.UpstreamError as err:
                if not _note_failure(err, errors, candidates):
                    break
                continue
            metrics.upstream_latency.labels(model=name).observe(time.perf_counter() - t0)
            metrics.record_answer(req.model, name, routed=req.model in POLICY_MODELS)
            body = _relay(name, head, rest, wants_usage)
            return StreamingResponse(
                body,
                media_type="text/event-stream",
                headers=_headers(name, req.model, len(errors), routing_ms),
            )
        raise _final_error(errors)

    async def _relay(name: str, head: list[dict], rest, wants_usage: bool):
        usage = None

        def event(chunk: dict) -> str | None:
            nonlocal usage
            usage = chunk.get("usage") or usage
            if not wants_usage:
                if not chunk.get("choices"):
                    return None  # the usage-only chunk the client did not ask for
                chunk.pop("usage", None)
            return f"data: {json.dumps(chunk)}\n\n"

        try:
            for chunk in head:
                if (line := event(chunk)) is not None:
                    yield line
            async for chunk in rest:
                if (line := event(chunk)) is not None:
                    yield line
        except upstream.UpstreamError as err:
            metrics.upstream_errors.labels(model=err.model, kind=err.kind).inc()
            log.warning("upstream stream %s", upstream.scrub(str(err), endpoint_list))
            message = upstream.scrub(f"upstream stream broke ({err})", endpoint_list)
            error = {"message": message, "type": "upstream_error", "code": f"upstream_{err.kind}"}
            yield f"data: {json.dumps({'error': error})}\n\n"
        finally:
            await rest.aclose()
            metrics.record_cost(name, upstream.usage_cost(endpoints[name], usage))
        yield "data: [DONE]\n\n"

    return ProxyApp(app, chat)


class ProxyApp:
    """The FastAPI app, with ``POST /v1/chat/completions`` answered before FastAPI's layers.

    That endpoint is nearly all the traffic. Through FastAPI's middleware, exception and
    dependency layers (about twenty nested coroutines, all resumed at every await of the
    handler) it spent a third of the proxy's CPU at 200 in flight; here the same handler
    runs directly. Everything else (and other spellings of the path) is FastAPI's.
    """

    def __init__(self, api: FastAPI, chat) -> None:
        self.api, self._chat = api, chat
        self.state = api.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.api(scope, receive, send)
            return
        try:
            response = await self._chat(Request(scope, receive, send))
        except Exception as err:  # noqa: BLE001  (as FastAPI's handler: an OpenAI-style 500)
            response = internal_error(err)
        await response(scope, receive, send)


def internal_error(err: Exception) -> JSONResponse:
    log.exception("internal error", exc_info=err)
    return ProxyError(
        500, f"internal proxy error: {type(err).__name__}", "server_error", "internal_error"
    ).response()


def _headers(model: str, requested: str, fallbacks: int, routing_ms: float) -> dict[str, str]:
    return {
        "x-trouter-model": model,
        "x-trouter-policy": requested,
        "x-trouter-fallbacks": str(fallbacks),
        "x-trouter-routing-ms": f"{routing_ms:.2f}",
    }
