"""Forwarding one chat completion to a pool model through LiteLLM, streamed or not.

The proxy needs two things the batch LLM client does not do: relay a token stream as it
arrives, and classify every failure so the caller can decide between falling back to the
next model (timeouts, connection errors, 5xx, malformed replies) and passing the error
through to the user (429, 4xx caused by the request itself). Everything is async so one
process can hold hundreds of upstream calls open at once.

API keys come from the environment variable each pool entry names (read at call time by
``ModelEndpoint.api_key()``); they are passed to LiteLLM only and scrubbed from any error text
that is returned or logged (:mod:`trouter.serving.scrub`: before the text is cut, and with the
upstream's address taken out of what clients see; the log keeps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import

from trouter.llm.pool import MissingAPIKeyError, ModelEndpoint  # noqa: E402
from trouter.serving.scrub import public, scrub_secrets  # noqa: E402

log = logging.getLogger("trouter.serving.upstream")

for _name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # as trouter.llm.client does


_litellm: list[Any] = []


def litellm_module() -> Any:
    """LiteLLM, imported on first use: only upstreams that do not speak OpenAI's chat API (or
    ``--upstream litellm``) go through it, and importing it costs about 150 MiB and seconds."""
    if not _litellm:
        import litellm

        litellm.suppress_debug_info = True
        _litellm.append(litellm)
    return _litellm[0]


async def _acompletion(args: dict[str, Any]) -> Any:
    # a first import runs in a thread, so the event loop keeps serving meanwhile
    litellm = _litellm[0] if _litellm else await asyncio.to_thread(litellm_module)
    return await litellm.acompletion(**args)


def _raised(err: BaseException, *names: str) -> bool:
    """Whether ``err`` is one of LiteLLM's named errors (none can be while it is not loaded)."""
    litellm = sys.modules.get("litellm")
    return litellm is not None and isinstance(err, tuple(getattr(litellm, n) for n in names))


@dataclass
class UpstreamError(Exception):
    """A failed upstream call: ``retryable`` failures may be retried on another model."""

    model: str
    kind: str  # timeout | connection | server | malformed | rate_limit | auth | bad_request
    status: int  # the HTTP status to report if this is the final error
    message: str
    retryable: bool
    retry_after: str | None = None  # the upstream's Retry-After on a 429, passed on

    def __str__(self) -> str:
        return f"{self.model}: {self.kind}: {self.message}"


def missing_keys(endpoints: list[ModelEndpoint]) -> list[str]:
    """Pool entries whose key variable is named but unset, as ``model (VAR)`` strings."""
    missing = []
    for endpoint in endpoints:
        try:
            endpoint.api_key()
        except MissingAPIKeyError:
            missing.append(f"{endpoint.name} ({endpoint.api_key_env})")
    return missing


def classify(endpoint: ModelEndpoint, err: BaseException) -> UpstreamError:
    """Map a LiteLLM (or lower-level) exception to an :class:`UpstreamError` whose message a
    client may read (keys and addresses scrubbed, then cut)."""
    model = endpoint.name
    raw = str(getattr(err, "message", None) or err) or type(err).__name__
    message = public(raw, [endpoint])
    if isinstance(err, asyncio.TimeoutError | TimeoutError) or _raised(err, "Timeout"):
        return UpstreamError(model, "timeout", 504, "upstream timed out", True)
    if _raised(err, "RateLimitError"):
        return UpstreamError(model, "rate_limit", 429, message, False, _retry_after(err))
    if _raised(err, "APIConnectionError"):
        log.warning("upstream %s connection failure: %s", model, scrub_secrets(raw, [endpoint]))
        return UpstreamError(model, "connection", 502, message, True)
    if _raised(err, "AuthenticationError", "PermissionDeniedError"):
        return UpstreamError(model, "auth", 502, f"upstream refused the key: {message}", True)
    if _raised(err, "NotFoundError"):
        return UpstreamError(model, "server", 502, f"upstream has no such model: {message}", True)
    status = getattr(err, "status_code", None)
    if _raised(err, "BadRequestError", "UnprocessableEntityError") or (
        isinstance(status, int) and 400 <= status < 500
    ):
        return UpstreamError(model, "bad_request", 400, message, False)
    if isinstance(status, int) and status >= 500:
        unparseable = "Expecting value" in message or "JSONDecodeError" in message
        return UpstreamError(model, "malformed" if unparseable else "server", 502, message, True)
    return UpstreamError(model, "malformed", 502, f"bad upstream reply: {message}", True)


def _retry_after(err: BaseException) -> str | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or getattr(
        err, "litellm_response_headers", None
    )
    try:
        value = headers.get("retry-after") if headers is not None else None
    except AttributeError:
        return None
    return str(value) if value is not None else None


def _call_args(endpoint: ModelEndpoint, messages: list[dict], params: dict, timeout: float) -> dict:
    args: dict[str, Any] = {
        "model": endpoint.litellm_model,
        "messages": messages,
        "api_key": endpoint.api_key(),
        "timeout": timeout,
        "max_retries": 0,  # the proxy falls back to another model instead of waiting
        **params,
    }
    if endpoint.api_base:
        args["api_base"] = endpoint.api_base
    return args


def _as_dict(obj: Any) -> dict[str, Any]:
    """The OpenAI-shaped dict of a LiteLLM response or chunk, without LiteLLM's own fields."""
    data = obj if isinstance(obj, dict) else obj.model_dump(exclude_none=True)
    for choice in data.get("choices") or []:
        choice.pop("provider_specific_fields", None)
        for part in ("message", "delta"):
            if isinstance(choice.get(part), dict):
                choice[part].pop("provider_specific_fields", None)
    return data


async def complete(
    endpoint: ModelEndpoint, messages: list[dict], params: dict, timeout: float
) -> dict[str, Any]:
    """One non-streamed completion as an OpenAI-shaped dict (``model`` = the pool name)."""
    try:
        args = _call_args(endpoint, messages, params, timeout)
        response = await asyncio.wait_for(_acompletion(args), timeout + 1.0)
        data = _as_dict(response)
        if not data.get("choices"):
            raise ValueError("reply has no choices")
    except MissingAPIKeyError as err:
        raise UpstreamError(endpoint.name, "auth", 502, str(err), True) from err
    except Exception as err:  # every failure is classified; the caller decides what to do
        raise classify(endpoint, err) from err
    data["model"] = endpoint.name
    return data


async def open_stream(
    endpoint: ModelEndpoint, messages: list[dict], params: dict, timeout: float
) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
    """Start a streamed completion and read it up to its first real delta.

    Failing before anything is relayed is still recoverable (the caller can try another
    model), so the head of the stream is read here: a stream that ends before any delta
    carries a role, content or tool call is malformed (LiteLLM turns an unparseable reply into
    an empty "stop" chunk). Returns the head chunks and an iterator over the rest, which
    raises :class:`UpstreamError` if the upstream stalls for ``timeout`` s or breaks mid-way.
    """

    async def next_chunk() -> dict[str, Any] | None:
        try:
            chunk = await asyncio.wait_for(anext(iterator), timeout)
        except StopAsyncIteration:
            return None
        except Exception as err:
            raise classify(endpoint, err) from err
        data = _as_dict(chunk)
        data["model"] = endpoint.name
        return data

    try:
        args = _call_args(endpoint, messages, {**params, "stream": True}, timeout)
        stream = await asyncio.wait_for(_acompletion(args), timeout + 1.0)
    except MissingAPIKeyError as err:
        raise UpstreamError(endpoint.name, "auth", 502, str(err), True) from err
    except Exception as err:
        raise classify(endpoint, err) from err
    iterator = aiter(stream)
    head: list[dict[str, Any]] = []
    while not any(has_delta(chunk) for chunk in head):
        chunk = await next_chunk()
        if chunk is None:
            raise UpstreamError(endpoint.name, "malformed", 502, "stream without content", True)
        head.append(chunk)

    async def rest() -> AsyncIterator[dict[str, Any]]:
        try:
            while (chunk := await next_chunk()) is not None:
                yield chunk
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                # closing a broken stream must not mask the real error
                with contextlib.suppress(Exception):
                    await close()

    return head, rest()


def has_delta(chunk: dict[str, Any]) -> bool:
    return any(choice.get("delta") for choice in chunk.get("choices") or [])


def usage_cost(endpoint: ModelEndpoint, usage: dict[str, Any] | None) -> float | None:
    """USD cost of a call from its token usage and the pool's prices (None if unknown)."""
    if not usage:
        return None
    return endpoint.cost(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)


def status_error(
    endpoint: ModelEndpoint, status: int, text: str, retry_after: str | None = None
) -> UpstreamError:
    """Classify an upstream HTTP error status (with its body's message) like LiteLLM's errors.

    The message is scrubbed of keys and addresses before it is cut.
    """
    model = endpoint.name
    message = public(_error_message(text) or f"HTTP {status}", [endpoint])
    if status == 429:
        return UpstreamError(model, "rate_limit", 429, message, False, retry_after)
    if status in (401, 403):
        return UpstreamError(model, "auth", 502, f"upstream refused the key: {message}", True)
    if status == 404:
        return UpstreamError(model, "server", 502, f"upstream has no such model: {message}", True)
    if 400 <= status < 500:
        return UpstreamError(model, "bad_request", 400, message, False)
    return UpstreamError(model, "server", 502, f"HTTP {status}: {message}", True)


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI error body, else the whole text (uncut)."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
