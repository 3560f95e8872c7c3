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
``Retry-After``) and other 4xx are the caller's and are passed through. Error text is scrubbed
of keys and upstream addresses before it is cut (:mod:`trouter.serving.scrub`); transport
details (which host could not be reached) go to the server log only.

Each upstream origin (``scheme://host:port``) has its own bounded connection pool, sized by
the caller (:func:`trouter.serving.isolation.host_limits`), so a hung host cannot take the
connections another host needs. A pooled keep-alive connection that the upstream closed while
idle fails the first write or read of the next request; such a failure, on a reused connection
and before any response byte, is retried once on a fresh connection (the request never reached
the upstream's handler), as HTTP clients do for idempotent requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from trouter.llm.pool import MissingAPIKeyError, ModelEndpoint
from trouter.serving.isolation import origin
from trouter.serving.scrub import public, scrub_secrets
from trouter.serving.upstream import UpstreamError, has_delta, status_error

log = logging.getLogger("trouter.serving.upstream")

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
    """Bounded keep-alive connection pools, one per upstream origin.

    Each origin's pool holds at most ``host_limits[origin]`` connections (``max_connections``
    for an origin not listed), so memory does not grow with traffic and one origin's hung
    calls never hold another's connections: a burst beyond the bound waits for a free
    connection. Subclasses supply the transport: :meth:`_new_pool`, :meth:`_post`,
    :meth:`_open`, :meth:`_close_pool` and the exception types.
    """

    timeout_errors: tuple[type[BaseException], ...] = (TimeoutError,)
    transport_errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        timeout: float,
        max_connections: int = 512,
        host_limits: dict[str, int] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.host_limits = dict(host_limits or {})
        self._pools: dict[tuple[str, bool], Any] = {}
        self._configure()

    def _configure(self) -> None:
        """Transport set-up (imports, exception types, timeouts)."""

    def pool(self, url: str, fresh: bool = False) -> Any:
        """The origin's pooled client, or (``fresh``) its client that never reuses a
        connection; created lazily inside the server's event loop."""
        key = (origin(url), fresh)
        if key not in self._pools:
            limit = self.host_limits.get(key[0], self.max_connections)
            self._pools[key] = self._new_pool(limit, fresh)
        return self._pools[key]

    def _new_pool(self, limit: int, fresh: bool) -> Any:
        raise NotImplementedError

    async def _close_pool(self, pool: Any) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await self._close_pool(pool)

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        raise NotImplementedError

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
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
        """The client sees the kind of failure; the log gets the detail (keys scrubbed)."""
        detail = scrub_secrets(f"{type(err).__name__}: {err}", [endpoint])
        log.warning("upstream %s transport failure: %s", endpoint.name, detail)
        if isinstance(err, self.timeout_errors):
            return UpstreamError(endpoint.name, "timeout", 504, "upstream timed out", True)
        message = f"could not reach the upstream ({type(err).__name__})"
        return UpstreamError(endpoint.name, "connection", 502, message, True)

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
            raise status_error(endpoint, status, text, retry_after)
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not data.get("choices"):
                raise ValueError("reply has no choices")
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            message = public(f"bad upstream reply: {err}", [endpoint])
            raise UpstreamError(endpoint.name, "malformed", 502, message, True) from err
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
            raise status_error(endpoint, status, text, retry_after)
        chunks = self._events(endpoint, lines, close)
        head: list[dict[str, Any]] = []
        try:
            while not any(has_delta(chunk) for chunk in head):
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
        self,
        endpoint: ModelEndpoint,
        lines: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[dict[str, Any]]:
        """The JSON chunks of a server-sent event stream; closes the response when done."""
        name = endpoint.name
        try:
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event names
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                yield _chunk(endpoint, payload)
        except self.timeout_errors as err:
            raise UpstreamError(name, "timeout", 504, "upstream stream stalled", True) from err
        except (*self.transport_errors, ValueError) as err:  # ValueError: a line over the limit
            detail = scrub_secrets(f"{type(err).__name__}: {err}", [endpoint])
            log.warning("upstream %s stream broke: %s", name, detail)
            message = f"stream broke ({type(err).__name__})"
            raise UpstreamError(name, "connection", 502, message, True) from err
        finally:
            await close()


def _chunk(endpoint: ModelEndpoint, payload: bytes) -> dict[str, Any]:
    name = endpoint.name
    try:
        chunk = json.loads(payload)
    except ValueError as err:
        raise UpstreamError(name, "malformed", 502, "unparseable stream chunk", True) from err
    if not isinstance(chunk, dict):
        raise UpstreamError(name, "malformed", 502, "stream chunk is not an object", True)
    if "error" in chunk and not chunk.get("choices"):
        message = public(f"stream error: {chunk['error']}", [endpoint])
        raise UpstreamError(name, "server", 502, message, True)
    chunk["model"] = name
    return chunk


class AiohttpClient(OpenAIClient):
    """The default transport: one ``aiohttp.ClientSession`` per origin, each over a bounded
    ``TCPConnector``."""

    def _configure(self) -> None:
        import aiohttp

        timeout = self.timeout
        self._aiohttp = aiohttp
        self.timeout_errors = (TimeoutError,)  # aiohttp's timeouts subclass it
        self.transport_errors = (aiohttp.ClientError,)
        # what a keep-alive connection the upstream closed while idle fails with
        self._stale_errors = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
        self._fresh_only = (aiohttp.ClientConnectorError,)  # raised before any reuse
        # connect covers waiting for a pooled connection too; sock_read bounds a stall
        self._stream_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._call_timeout = aiohttp.ClientTimeout(
            total=timeout + 1.0, connect=timeout, sock_read=timeout
        )
        self._trace = aiohttp.TraceConfig()
        self._trace.on_connection_reuseconn.append(_note_reuse)

    def _new_pool(self, limit: int, fresh: bool) -> Any:
        aiohttp = self._aiohttp
        connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, force_close=fresh)
        return aiohttp.ClientSession(
            connector=connector,
            read_bufsize=READ_BUFFER_BYTES,
            trace_configs=[] if fresh else [self._trace],
        )

    async def _close_pool(self, pool: Any) -> None:
        await pool.close()

    async def _send(self, url: str, content: bytes, headers: dict[str, str], timeout: Any):
        """POST up to the response's status line, once more on a fresh connection if a
        reused one turns out to be closed."""
        attempt = {"reused": False}
        try:
            return await self.pool(url).post(
                url, data=content, headers=headers, timeout=timeout, trace_request_ctx=attempt
            )
        except self._fresh_only:
            raise
        except self._stale_errors as err:
            if not attempt["reused"]:
                raise
            log.info("retrying on a fresh connection: a pooled one failed (%s)", type(err).__name__)
        return await self.pool(url, fresh=True).post(
            url, data=content, headers=headers, timeout=timeout
        )

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        async with await self._send(url, content, headers, self._call_timeout) as response:
            return response.status, response.headers.get("retry-after"), await response.read()

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
        response = await self._send(url, content, headers, self._stream_timeout)

        async def close() -> None:
            response.release()  # back to the pool if read to the end, else closed

        return response.status, response.headers.get("retry-after"), response.content, close


async def _note_reuse(session: Any, context: Any, params: Any) -> None:
    """aiohttp trace hook: the request got a pooled keep-alive connection."""
    if isinstance(context.trace_request_ctx, dict):
        context.trace_request_ctx["reused"] = True


class HttpxClient(OpenAIClient):
    """The httpx transport (``--upstream httpx``), kept to measure against aiohttp."""

    def _configure(self) -> None:
        import httpx

        self._httpx = httpx
        self.timeout_errors = (TimeoutError, httpx.TimeoutException)
        self.transport_errors = (httpx.HTTPError,)
        self._stale_errors = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

    def _new_pool(self, limit: int, fresh: bool) -> Any:
        httpx = self._httpx
        limits = httpx.Limits(
            max_connections=limit, max_keepalive_connections=0 if fresh else limit
        )
        timeout = httpx.Timeout(self.timeout, pool=self.timeout)
        return httpx.AsyncClient(limits=limits, timeout=timeout)

    async def _close_pool(self, pool: Any) -> None:
        await pool.aclose()

    async def _send(self, url: str, content: bytes, headers: dict[str, str], stream: bool):
        """As :meth:`AiohttpClient._send`; httpcore's trace events tell a new connection."""
        attempt = {"reused": True}

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.startswith("connection.connect_tcp."):
                attempt["reused"] = False

        client = self.pool(url)
        request = client.build_request(
            "POST", url, content=content, headers=headers, extensions={"trace": trace}
        )
        try:
            return await client.send(request, stream=stream)
        except self._stale_errors as err:
            if not attempt["reused"]:
                raise
            log.info("retrying on a fresh connection: a pooled one failed (%s)", type(err).__name__)
        client = self.pool(url, fresh=True)
        request = client.build_request("POST", url, content=content, headers=headers)
        return await client.send(request, stream=stream)

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        async with asyncio.timeout(self.timeout + 1.0):
            response = await self._send(url, content, headers, stream=False)
        return response.status_code, response.headers.get("retry-after"), response.content

    async def _open(self, url: str, content: bytes, headers: dict[str, str]) -> Opened:
        response = await self._send(url, content, headers, stream=True)

        async def lines() -> AsyncIterator[bytes]:
            async for line in response.aiter_lines():
                yield line.encode()

        return (
            response.status_code,
            response.headers.get("retry-after"),
            lines(),
            response.aclose,
        )


def make_client(
    kind: str,
    timeout: float,
    max_connections: int = 512,
    host_limits: dict[str, int] | None = None,
) -> OpenAIClient:
    """The direct client of that transport (one of :data:`CLIENTS`)."""
    transports = {"aiohttp": AiohttpClient, "httpx": HttpxClient}
    if kind in transports:
        return transports[kind](timeout, max_connections, host_limits)
    raise ValueError(f"unknown upstream client {kind!r}; choose from {', '.join(CLIENTS)}")
