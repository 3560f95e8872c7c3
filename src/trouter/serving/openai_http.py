"""Forwarding to OpenAI-compatible upstreams with one shared async httpx client.

LiteLLM speaks a hundred providers, but per call it builds its logging, cost and response
objects; for an upstream that already speaks OpenAI's chat API (``litellm_model:
openai/<id>``: OpenAI itself, vLLM, llama.cpp, Ollama's /v1, the test stand-in) the proxy can
send the request body as it is and relay the reply as it is. ``scripts/bench_serving.py``
measures both paths in one run; README quotes the numbers. Other providers keep LiteLLM
(:mod:`trouter.serving.upstream`).

Failures are classified exactly as on the LiteLLM path: timeouts, connection errors, 5xx,
404 and unparseable replies may fall back to the next model; 429 (with the upstream's
``Retry-After``) and other 4xx are the caller's and are passed through.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from trouter.llm.pool import MissingAPIKeyError, ModelEndpoint
from trouter.serving.upstream import UpstreamError

PREFIX = "openai/"
OPENAI_BASE = "https://api.openai.com/v1"


def speaks_openai(endpoint: ModelEndpoint) -> bool:
    """True when the pool entry is an OpenAI-compatible chat endpoint."""
    return endpoint.litellm_model.startswith(PREFIX)


class OpenAIClient:
    """One pooled, keep-alive connection pool for every OpenAI-compatible upstream.

    The pool is bounded (``max_connections``), so memory does not grow with traffic: a burst
    beyond it waits for a free connection instead of opening more.
    """

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        self.timeout = timeout
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # created lazily inside the server's event loop
            self._client = httpx.AsyncClient(
                limits=self._limits, timeout=httpx.Timeout(self.timeout, pool=self.timeout)
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _request(self, endpoint: ModelEndpoint, body: dict[str, Any]) -> httpx.Request:
        try:
            key = endpoint.api_key()
        except MissingAPIKeyError as err:
            raise UpstreamError(endpoint.name, "auth", 502, str(err), True) from err
        base = (endpoint.api_base or OPENAI_BASE).rstrip("/")
        body = {**body, "model": endpoint.litellm_model[len(PREFIX) :]}
        return self.client.build_request(
            "POST",
            f"{base}/chat/completions",
            content=json.dumps(body).encode(),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )

    async def complete(
        self, endpoint: ModelEndpoint, messages: list[dict], params: dict
    ) -> dict[str, Any]:
        """One non-streamed completion as an OpenAI dict whose ``model`` is the pool name."""
        request = self._request(endpoint, {"messages": messages, **params})
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                response = await self.client.send(request)
        except (TimeoutError, httpx.TimeoutException) as err:
            raise UpstreamError(endpoint.name, "timeout", 504, "upstream timed out", True) from err
        except httpx.HTTPError as err:
            raise _transport_error(endpoint, err) from err
        if response.status_code != 200:
            raise status_error(endpoint.name, response.status_code, response.text, response)
        try:
            data = response.json()
            if not isinstance(data, dict) or not data.get("choices"):
                raise ValueError("reply has no choices")
        except ValueError as err:
            raise UpstreamError(
                endpoint.name, "malformed", 502, f"bad upstream reply: {err}", True
            ) from err
        data["model"] = endpoint.name
        return data

    async def open_stream(
        self, endpoint: ModelEndpoint, messages: list[dict], params: dict
    ) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
        """Start a stream and read it up to its first real delta (see ``upstream.open_stream``).

        A stall of ``timeout`` s between bytes is httpx's read timeout, raised as a timeout.
        """
        request = self._request(endpoint, {"messages": messages, **params, "stream": True})
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as err:
            raise UpstreamError(endpoint.name, "timeout", 504, "upstream timed out", True) from err
        except httpx.HTTPError as err:
            raise _transport_error(endpoint, err) from err
        if response.status_code != 200:
            try:
                text = (await response.aread()).decode("utf-8", "replace")
            except httpx.HTTPError:
                text = ""
            finally:
                await response.aclose()
            raise status_error(endpoint.name, response.status_code, text, response)
        chunks = _events(endpoint.name, response)
        head: list[dict[str, Any]] = []
        try:
            while not any(_has_delta(chunk) for chunk in head):
                chunk = await anext(chunks, None)
                if chunk is None:
                    raise UpstreamError(
                        endpoint.name, "malformed", 502, "stream without content", True
                    )
                head.append(chunk)
        except BaseException:
            await chunks.aclose()
            raise
        return head, chunks


async def _events(name: str, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream; closes the response when done."""
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, event names
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            try:
                chunk = json.loads(payload)
            except ValueError as err:
                raise UpstreamError(
                    name, "malformed", 502, "unparseable stream chunk", True
                ) from err
            if not isinstance(chunk, dict):
                raise UpstreamError(name, "malformed", 502, "stream chunk is not an object", True)
            if "error" in chunk and not chunk.get("choices"):
                raise UpstreamError(name, "server", 502, f"stream error: {chunk['error']}", True)
            chunk["model"] = name
            yield chunk
    except httpx.TimeoutException as err:
        raise UpstreamError(name, "timeout", 504, "upstream stream stalled", True) from err
    except httpx.HTTPError as err:
        raise UpstreamError(name, "connection", 502, f"stream broke: {err!r}", True) from err
    finally:
        await response.aclose()


def _has_delta(chunk: dict[str, Any]) -> bool:
    return any(choice.get("delta") for choice in chunk.get("choices") or [])


def _transport_error(endpoint: ModelEndpoint, err: httpx.HTTPError) -> UpstreamError:
    return UpstreamError(endpoint.name, "connection", 502, f"{type(err).__name__}: {err}", True)


def status_error(
    model: str, status: int, text: str, response: httpx.Response | None = None
) -> UpstreamError:
    """Classify an upstream HTTP error status (with its body's message) like LiteLLM's errors."""
    message = _error_message(text) or f"HTTP {status}"
    if status == 429:
        retry_after = response.headers.get("retry-after") if response is not None else None
        return UpstreamError(model, "rate_limit", 429, message, False, retry_after)
    if status in (401, 403):
        return UpstreamError(model, "auth", 502, f"upstream refused the key: {message}", True)
    if status == 404:
        return UpstreamError(model, "server", 502, f"upstream has no such model: {message}", True)
    if 400 <= status < 500:
        return UpstreamError(model, "bad_request", 400, message, False)
    return UpstreamError(model, "server", 502, f"HTTP {status}: {message}", True)


def _error_message(text: str) -> str:
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text[:300]
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]
