"""Calling the planned pool models in turn until one answers, and relaying its reply.

A failed call (timeout, connection error, 5xx, malformed reply) falls back to the next
candidate, at most ``max_attempts`` calls in all; for streams this is possible until the first
chunk has been relayed. 429 and the request's own 4xx are passed through. A client that leaves
cancels the upstream call: a non-streamed request by :func:`unless_client_leaves`, a stream by
Starlette closing its body (both are counted as client-aborted, status 499, in ``/metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from trouter.llm.pool import ModelEndpoint
from trouter.serving import upstream
from trouter.serving.metrics import ProxyMetrics
from trouter.serving.planning import Plan
from trouter.serving.requests import ProxyError
from trouter.serving.scrub import scrub_secrets

log = logging.getLogger("trouter.serving")

#: nginx's "client closed request": what ``/metrics`` counts a request as when its client left.
CLIENT_CLOSED = 499


class ClientGone(Exception):
    """The client disconnected before its reply was ready."""


async def _cancel_on_disconnect(receive, task: asyncio.Task, left: list[bool]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    left.append(True)
    task.cancel()


async def unless_client_leaves(receive, work: Awaitable[Any]) -> Any:
    """``work``'s result, or :class:`ClientGone` (with ``work`` cancelled) if the client leaves
    first. Call only once the request body has been read (``receive`` then only reports the
    disconnect)."""
    left: list[bool] = []
    current = asyncio.current_task()
    assert current is not None
    watch = asyncio.ensure_future(_cancel_on_disconnect(receive, current, left))
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            current.uncancel()
            raise ClientGone from None
        raise
    finally:
        watch.cancel()


#: Called with (pool model, usage) when a reply is complete, to charge and remember it.
#: It may return fields for the reply's ``trouter`` key (the final chunk of a stream).
OnAnswer = Callable[[str, dict | None], dict | None]


@dataclass
class Forwarder:
    endpoints: dict[str, ModelEndpoint]
    complete: Callable[..., Awaitable[dict]]
    open_stream: Callable[..., Awaitable[tuple]]
    metrics: ProxyMetrics

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self.endpoints.values())

    async def _first_answer(self, plan: Plan, call) -> tuple[str, Any, int]:
        """(model, result, failed calls before it) of the first candidate that answers."""
        errors: list[upstream.UpstreamError] = []
        for name in plan.candidates:
            t0 = time.perf_counter()
            try:
                result = await call(self.endpoints[name])
            except upstream.UpstreamError as err:
                if not self._note_failure(err, errors, plan.candidates):
                    break
                continue
            self.metrics.upstream_latency.labels(model=name).observe(time.perf_counter() - t0)
            self.metrics.record_answer(plan.requested, name, routed=plan.routed)
            return name, result, len(errors)
        raise self._final_error(errors)

    async def reply(
        self, plan: Plan, messages: list[dict], params: dict, headers: dict, on_answer: OnAnswer
    ) -> JSONResponse:
        name, data, failed = await self._first_answer(
            plan, lambda endpoint: self.complete(endpoint, messages, params)
        )
        if extra := on_answer(name, data.get("usage")):
            data["trouter"] = extra  # what the proxy did, beside the upstream's answer
        return JSONResponse(data, headers={**headers, **_answer_headers(name, failed)})

    async def stream(
        self,
        plan: Plan,
        messages: list[dict],
        params: dict,
        headers: dict,
        wants_usage: bool,
        on_answer: OnAnswer,
        on_end: Callable[[int], None],
        collected: dict | None = None,
    ) -> StreamingResponse:
        """The first candidate that opens a stream, relayed; with ``collected``, the answer
        (``model``, ``text``, ``finished``) is gathered there as it goes out."""
        params = {**params, "stream_options": {"include_usage": True}}
        name, (head, rest), failed = await self._first_answer(
            plan, lambda endpoint: self.open_stream(endpoint, messages, params)
        )
        return StreamingResponse(
            self._relay(name, head, rest, wants_usage, on_answer, on_end, collected),
            media_type="text/event-stream",
            headers={**headers, **_answer_headers(name, failed)},
        )

    async def _relay(self, name, head, rest, wants_usage: bool, on_answer, on_end, collected):
        finished = False
        parts: list[str] | None = None if collected is None else []
        try:
            lines = self._lines(name, head, rest, wants_usage, on_answer, parts)
            async with aclosing(lines) as lines:
                async for line in lines:
                    yield line
            finished = True
        finally:
            if collected is not None:
                collected.update(model=name, text="".join(parts), finished=finished)
            # not finished: closed before [DONE] went out, Starlette saw the client leave
            on_end(200 if finished else CLIENT_CLOSED)

    async def _lines(self, name, head, rest, wants_usage: bool, on_answer, parts=None):
        """The stream's events as relayed, then its usage chunk (if asked for) and [DONE];
        the answer's text pieces appended to ``parts`` (when given)."""
        usage = held = None

        def event(chunk: dict) -> str | None:
            nonlocal usage, held
            usage = chunk.get("usage") or usage
            if parts is not None:
                parts.append(_delta_text(chunk))
            if not wants_usage:
                if not chunk.get("choices"):
                    return None  # the usage-only chunk the client did not ask for
                chunk.pop("usage", None)
            elif not chunk.get("choices") and chunk.get("usage"):
                held = chunk  # the usage chunk goes out last, with the proxy's own fields
                return None
            return f"data: {json.dumps(chunk)}\n\n"

        try:
            for chunk in head:
                if (line := event(chunk)) is not None:
                    yield line
            async for chunk in rest:
                if (line := event(chunk)) is not None:
                    yield line
        except upstream.UpstreamError as err:
            self.metrics.upstream_errors.labels(model=err.model, kind=err.kind).inc()
            log.warning("upstream stream %s", self._scrub(str(err)))
            message = self._scrub(f"upstream stream broke ({err})")
            error = {"message": message, "type": "upstream_error", "code": f"upstream_{err.kind}"}
            yield f"data: {json.dumps({'error': error})}\n\n"
        finally:
            await rest.aclose()
            extra = on_answer(name, usage)
        if held is not None:
            if extra:
                held["trouter"] = extra
            yield f"data: {json.dumps(held)}\n\n"
        yield "data: [DONE]\n\n"

    def _note_failure(self, err: upstream.UpstreamError, errors: list, candidates: list) -> bool:
        """Record a failed call; True if the next candidate should be tried."""
        errors.append(err)
        self.metrics.upstream_errors.labels(model=err.model, kind=err.kind).inc()
        log.warning("upstream %s", self._scrub(str(err)))
        retry = err.retryable and len(errors) < len(candidates)
        if retry:
            self.metrics.fallbacks.inc()
        return retry

    def _final_error(self, errors: list[upstream.UpstreamError]) -> ProxyError:
        last = errors[-1]
        trail = "; ".join(str(e) for e in errors)
        message = self._scrub(f"upstream call failed ({trail})")
        kinds = {
            "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
            "bad_request": ("invalid_request_error", "upstream_bad_request"),
            "timeout": ("upstream_error", "upstream_timeout"),
        }
        type_, code = kinds.get(last.kind, ("upstream_error", f"upstream_{last.kind}"))
        headers = {"retry-after": last.retry_after} if last.retry_after else None
        return ProxyError(last.status, message, type_, code, headers)


def _answer_headers(model: str, failed: int) -> dict[str, str]:
    return {"x-trouter-model": model, "x-trouter-fallbacks": str(failed)}


def client_closed() -> Response:
    """The response to a request whose client has left (never delivered; 499 in metrics)."""
    return Response(status_code=CLIENT_CLOSED)


def _delta_text(chunk: dict) -> str:
    """The text a stream chunk adds to the first choice's answer ("" if none)."""
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""
