"""Forwarding to OpenAI-compatible upstreams over one pooled async HTTP client.

LiteLLM speaks a hundred providers, but per call it builds its logging, cost and response
objects; for an upstream that already speaks OpenAI's chat API (``litellm_model:
openai/<id>``: OpenAI itself, vLLM, llama.cpp, Ollama's /v1, the test stand-in) the proxy can
send the request body as it is and relay the reply as it is. Other providers keep LiteLLM
(:mod:`trouter.serving.upstream`).

Two transports share everything but the socket work: :class:`AiohttpClient` (the default)
and :class:`HttpxClient`. ``scripts/bench_serving.py`` measures both in one run: httpx's
connection pool checks every pooled connection on each request (``is_idle``), which at 200
in flight cost several ms of CPU per request; aiohttp's does not. README quotes the numbers.

Failures are classified exactly as on the LiteLLM path: timeouts, connection errors, 5xx,
404 and unparseable replies may fall back to the next model; 429 (with the upstream's
``Retry-After``) and other 4xx are the caller's and are passed through.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from trouter.llm.pool import MissingAPIKeyError, ModelEndpoint
from trouter.serving.upstream import UpstreamError

PREFIX = "openai/"
OPENAI_BASE = "https://api.openai.com/v1"
CLIENTS = ("aiohttp", "httpx")
#: aiohttp's read buffer; a streamed line may be up to twice this (tool calls, logprobs).
READ_BUFFER_BYTES = 2**20


def speaks_openai(endpoint: ModelEndpoint) -> bool:
    """True when the pool entry is an OpenAI-compatible chat endpoint."""
    return endpoint.litellm_model.startswith(PREFIX)


#: (status, Retry-After, body) of a finished call.
Reply = tuple[int, str | None, bytes]
#: (status, Retry-After, the body's lines, close) of an opened stream.
Opened = tuple[int, str | None, AsyncIterator[bytes], Callable[[], Awaitable[None]]]


class OpenAIClient:
    """One bounded keep-alive connection pool for every OpenAI-compatible upstream.

    The pool is bounded (``max_connections``), so memory does not grow with traffic: a burst
    beyond it waits for a free connection instead of opening more. Subclasses supply the
    transport: :meth:`_post`, :meth:`_open`, :meth:`aclose` and the exception types.
    """

    timeout_errors: tuple[type[BaseException], ...] = (TimeoutError,)
    transport_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        self.timeout = timeout
        self.max_connections = max_connections

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        raise NotImplementedError

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def _request(self, endpoint: ModelEndpoint, body: dict[str, Any]):
        try:
            key = endpoint.api_key()
        except MissingAPIKeyError as err:
            raise UpstreamError(endpoint.name, "auth", 502, str(err), True) from err
        base = (endpoint.api_base or OPENAI_BASE).rstrip("/")
        body["model"] = endpoint.litellm_model[len(PREFIX) :]
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        return f"{base}/chat/completions", json.dumps(body).encode(), headers

    def _transport_error(self, endpoint: ModelEndpoint, err: BaseException) -> UpstreamError:
        if isinstance(err, self.timeout_errors):
            return UpstreamError(endpoint.name, "timeout", 504, "upstream timed out", True)
        return UpstreamError(endpoint.name, "connection", 502, f"{type(err).__name__}: {err}", True)

    async def complete(
        self, endpoint: ModelEndpoint, messages: list[dict], params: dict
    ) -> dict[str, Any]:
        """One non-streamed completion as an OpenAI dict whose ``model`` is the pool name."""
        url, content, headers = self._request(endpoint, {"messages": messages, **params})
        try:
            status, retry_after, body = await self._post(url, content, headers)
        except (*self.timeout_errors, *self.transport_errors) as err:
            raise self._transport_error(endpoint, err) from err
        if status != 200:
            text = body.decode("utf-8", "replace")
            raise status_error(endpoint.name, status, text, retry_after)
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not data.get("choices"):
                raise ValueError("reply has no choices")
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise UpstreamError(
                endpoint.name, "malformed", 502, f"bad upstream reply: {err}", True
            ) from err
        data["model"] = endpoint.name
        return data

    async def open_stream(
        self, endpoint: ModelEndpoint, messages: list[dict], params: dict
    ) -> tuple[list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
        """Start a stream and read it up to its first real delta (see ``upstream.open_stream``).

        A stall of ``timeout`` s between bytes is a read timeout, raised as a timeout.
        """
        body = {"messages": messages, **params, "stream": True}
        url, content, headers = self._request(endpoint, body)
        try:
            status, retry_after, lines, close = await self._open(url, content, headers)
        except (*self.timeout_errors, *self.transport_errors) as err:
            raise self._transport_error(endpoint, err) from err
        if status != 200:
            try:
                text = b"".join([line async for line in lines]).decode("utf-8", "replace")
            except (*self.timeout_errors, *self.transport_errors, ValueError):
                text = ""
            finally:
                await close()
            raise status_error(endpoint.name, status, text, retry_after)
        chunks = self._events(endpoint.name, lines, close)
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

    async def _events(
        self, name: str, lines: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON chunks of a server-sent event stream; closes the response when done."""
        try:
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event names
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield _chunk(name, payload)
        except self.timeout_errors as err:
            raise UpstreamError(name, "timeout", 504, "upstream stream stalled", True) from err
        except (*self.transport_errors, ValueError) as err:  # ValueError: a line over the limit
            raise UpstreamError(name, "connection", 502, f"stream broke: {err!r}", True) from err
        finally:
            await close()


def _chunk(name: str, payload: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as err:
        raise UpstreamError(name, "malformed", 502, "unparseable stream chunk", True) from err
    if not isinstance(chunk, dict):
        raise UpstreamError(name, "malformed", 502, "stream chunk is not an object", True)
    if "error" in chunk and not chunk.get("choices"):
        raise UpstreamError(name, "server", 502, f"stream error: {chunk['error']}", True)
    chunk["model"] = name
    return chunk


class AiohttpClient(OpenAIClient):
    """The default transport: one ``aiohttp.ClientSession`` over a bounded ``TCPConnector``."""

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        import aiohttp

        super().__init__(timeout, max_connections)
        self._aiohttp = aiohttp
        self.timeout_errors = (TimeoutError,)  # aiohttp's timeouts subclass it
        self.transport_errors = (aiohttp.ClientError,)
        # connect covers waiting for a pooled connection too; sock_read bounds a stall
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._call_timeout = aiohttp.ClientTimeout(
            total=timeout + 1.0, connect=timeout, sock_read=timeout
        )
        self._session: Any = None

    @property
    def session(self):
        if self._session is None:  # created lazily inside the server's event loop
            connector = self._aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, ttl_dns_cache=300
            )
            self._session = self._aiohttp.ClientSession(
                connector=connector, read_bufsize=READ_BUFFER_BYTES
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        async with self.session.post(
            url, data=content, headers=headers, timeout=self._call_timeout
        ) as response:
            return response.status, response.headers.get("retry-after"), await response.read()

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
        response = await self.session.post(
            url, data=content, headers=headers, timeout=self._stream_timeout
        )

        async def close() -> None:
            response.release()  # back to the pool if read to the end, else closed

        return response.status, response.headers.get("retry-after"), response.content, close


class HttpxClient(OpenAIClient):
    """The httpx transport (``--upstream httpx``), kept to measure against aiohttp."""

    def __init__(self, timeout: float, max_connections: int = 512) -> None:
        import httpx

        super().__init__(timeout, max_connections)
        self._httpx = httpx
        self.timeout_errors = (TimeoutError, httpx.TimeoutException)
        self.transport_errors = (httpx.HTTPError,)
        self._client: Any = None

    @property
    def client(self):
        if self._client is None:  # created lazily inside the server's event loop
            httpx = self._httpx
            limits = httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            )
            timeout = httpx.Timeout(self.timeout, pool=self.timeout)
            self._client = httpx.AsyncClient(limits=limits, timeout=timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        request = self.client.build_request("POST", url, content=content, headers=headers)
        async with asyncio.timeout(self.timeout + 1.0):
            response = await self.client.send(request)
        return response.status_code, response.headers.get("retry-after"), response.content

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
        request = self.client.build_request("POST", url, content=content, headers=headers)
        response = await self.client.send(request, stream=True)

        async def lines() -> AsyncIterator[bytes]:
            async for line in response.aiter_lines():
                yield line.encode()

        return (
            response.status_code,
            response.headers.get("retry-after"),
            lines(),
            response.aclose,
        )


def make_client(kind: str, timeout: float, max_connections: int = 512) -> OpenAIClient:
    """The direct client of that transport (one of :data:`CLIENTS`)."""
    if kind == "aiohttp":
        return AiohttpClient(timeout, max_connections)
    if kind == "httpx":
        return HttpxClient(timeout, max_connections)
    raise ValueError(f"unknown upstream client {kind!r}; choose from {', '.join(CLIENTS)}")


def _has_delta(chunk: dict[str, Any]) -> bool:
    return any(choice.get("delta") for choice in chunk.get("choices") or [])


def status_error(
    model: str, status: int, text: str, retry_after: str | None = None
) -> UpstreamError:
    """Classify an upstream HTTP error status (with its body's message) like LiteLLM's errors."""
    message = _error_message(text) or f"HTTP {status}"
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
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return text[:300]
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]
