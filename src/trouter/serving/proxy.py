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
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from trouter.llm.pool import Pool
from trouter.serving import upstream
from trouter.serving.api import RoutingService, resolve_policy
from trouter.serving.batching import RouteBatcher
from trouter.serving.metrics import ProxyMetrics

log = logging.getLogger("trouter.serving")

POLICY_MODELS = {
    "trouter-balanced": "balanced",
    "trouter-cost-first": "cost-first",
    "trouter-performance-first": "performance-first",
}
#: The encoder reads at most 256 tokens; this bounds the tokeniser's work on huge prompts.
MAX_QUERY_CHARS = 4000


@dataclass
class ProxySettings:
    max_body_bytes: int = 1_000_000
    max_attempts: int = 3
    upstream_timeout_s: float = 60.0
    max_batch: int = 64


class ProxyError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _invalid(message: str, code: str = "invalid_request") -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id... pass through
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The OpenAI chat request fields the proxy understands; anything else is refused."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    def forward_params(self) -> dict[str, Any]:
        skip = {"model", "messages", "stream", "stream_options"}
        return self.model_dump(exclude_none=True, exclude=skip)


def routing_query(messages: list[Message]) -> str:
    """The text of the last user message (see the module docstring for why)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        content = message.content
        if isinstance(content, list):
            content = "\n".join(
                str(part.get("text", "")) for part in content if part.get("type") == "text"
            )
        if not content or not content.strip():
            raise _invalid("the last user message has no text to route on", "empty_query")
        return content[:MAX_QUERY_CHARS]
    raise _invalid("the request has no user message to route on", "no_user_message")


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    too_big = ProxyError(
        413,
        f"request body exceeds the proxy's limit of {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_big
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _invalid(f"request body is not valid JSON: {err}", "invalid_json") from err


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "invalid chat request: " + "; ".join(parts)


def create_app(
    service: RoutingService, pool: Pool, settings: ProxySettings | None = None
) -> FastAPI:
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
    batcher = RouteBatcher(service, max_batch=settings.max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="trouter routing proxy", lifespan=lifespan)
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
        return _invalid(f"invalid request: {err.errors()[:3]}").response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error")
        return ProxyError(
            500, f"internal proxy error: {type(err).__name__}", "server_error", "internal_error"
        ).response()

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

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        started = time.perf_counter()
        label = "invalid"
        try:
            raw = await _read_json(request, settings.max_body_bytes)
            if isinstance(raw, dict) and isinstance(raw.get("model"), str):
                name = raw["model"]
                label = name if name in POLICY_MODELS or name in endpoints else "unknown"
            try:
                chat_request = ChatRequest.model_validate(raw)
            except ValidationError as err:
                raise _invalid(_validation_message(err)) from err
            response = await _handle(chat_request, started)
        except ProxyError as err:
            metrics.requests.labels(policy=label, status=str(err.status)).inc()
            return err.response()
        metrics.requests.labels(policy=label, status=str(response.status_code)).inc()
        return response

    async def _handle(req: ChatRequest, started: float) -> Response:
        if req.model in POLICY_MODELS:
            query = routing_query(req.messages)
            result = await batcher.route(query, resolve_policy(POLICY_MODELS[req.model]))
            candidates = list(result.ranking[: max(1, settings.max_attempts)])
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
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        params = req.forward_params()
        if req.stream:
            return await _stream(req, candidates, messages, params, routing_ms)
        errors: list[upstream.UpstreamError] = []
        for name in candidates:
            t0 = time.perf_counter()
            try:
                data = await upstream.complete(
                    endpoints[name], messages, params, settings.upstream_timeout_s
                )
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
        log.warning("upstream %s", upstream.scrub(str(err), list(endpoints.values())))
        retry = err.retryable and len(errors) < len(candidates)
        if retry:
            metrics.fallbacks.inc()
        return retry

    def _final_error(errors: list[upstream.UpstreamError]) -> ProxyError:
        last = errors[-1]
        trail = "; ".join(str(e) for e in errors)
        message = upstream.scrub(f"upstream call failed ({trail})", list(endpoints.values()))
        kinds = {
            "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
            "bad_request": ("invalid_request_error", "upstream_bad_request"),
            "timeout": ("upstream_error", "upstream_timeout"),
        }
        type_, code = kinds.get(last.kind, ("upstream_error", f"upstream_{last.kind}"))
        return ProxyError(last.status, message, type_, code)

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
                head, rest = await upstream.open_stream(
                    endpoints[name], messages, params, settings.upstream_timeout_s
                )
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
            log.warning("upstream stream %s", upstream.scrub(str(err), list(endpoints.values())))
            message = upstream.scrub(f"upstream stream broke ({err})", list(endpoints.values()))
            error = {"message": message, "type": "upstream_error", "code": f"upstream_{err.kind}"}
            yield f"data: {json.dumps({'error': error})}\n\n"
        finally:
            await rest.aclose()
            metrics.record_cost(name, upstream.usage_cost(endpoints[name], usage))
        yield "data: [DONE]\n\n"

    return app


def _headers(model: str, requested: str, fallbacks: int, routing_ms: float) -> dict[str, str]:
    return {
        "x-trouter-model": model,
        "x-trouter-policy": requested,
        "x-trouter-fallbacks": str(fallbacks),
        "x-trouter-routing-ms": f"{routing_ms:.2f}",
    }
