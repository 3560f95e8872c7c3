"""Limits that keep hostile or broken clients from holding the proxy.

Who enforces what:

* **uvicorn**: ``timeout_keep_alive`` closes idle keep-alive connections. Its
  ``limit_concurrency`` is not used: it answers 503 to requests beyond the limit but still
  accepts (and holds) their connections, so it does not keep descriptors free.
* :class:`GuardedProtocol`, a subclass of uvicorn's httptools protocol, adds what uvicorn and
  llhttp lack: a cap on the request head's bytes and header count (431), a deadline for the
  head to arrive (connections that send nothing or trickle headers are closed), and a cap on
  open connections (new ones are closed at once, with a warning at most every 10 s) set below
  the process's file-descriptor limit, so accept() never fails silently.
* **Starlette's** ``TrustedHostMiddleware``: a ``Host`` outside the allow-list gets 400
  (loopback names by default), which stops DNS rebinding; ``CORSMiddleware`` answers
  preflights for the origins given with ``--cors-origin``.
* :func:`refusal` (the proxy's own check, per request): a cross-origin request (an ``Origin``
  that is neither an allowed CORS origin nor the proxy itself) gets 403.
* The chat endpoint (``proxy``): ``Content-Type: application/json`` or 415, a body-read
  deadline (408) and the body-size cap (413).
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field

import httptools
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from trouter.serving.requests import ProxyError

log = logging.getLogger("trouter.serving")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Upstream connections and the process's own files come out of the same descriptor limit.
RESERVED_FDS = 128


def default_max_connections() -> int:
    """Half of what the open-file limit leaves (a client connection may hold an upstream one)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(8, min(1024, (soft - RESERVED_FDS) // 2))


@dataclass
class Limits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = field(default_factory=default_max_connections)
    allowed_hosts: list[str] = field(default_factory=lambda: list(LOOPBACK_HOSTS))
    cors_origins: list[str] = field(default_factory=list)


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a request head over the limits."""


class _Warnings:
    """At most one warning per ``every_s`` seconds, with the count of those held back."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self.last, self.held = every_s, 0.0, 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s:
            self.held += 1
            return
        suffix = f" ({self.held} more since the last warning)" if self.held else ""
        log.warning(message + suffix, *args)
        self.last, self.held = now, 0


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size/count/time limits and a connection cap."""

    limits: Limits = Limits()
    full_warnings, refusal_warnings = _Warnings(), _Warnings()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._head_timer = None
        self._expect_head()
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.full_warnings.warn(
                "connection limit reached: %d client connections are open "
                "(--max-connections); closing new connections until some end",
                len(self.connections),
            )
            transport.abort()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self.flow is None:  # refused in connection_made
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes are counted before parsing and checked after: a read that completes the head
        # may carry body bytes too, and the parser keeps an unfinished header in memory.
        if self._in_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            if isinstance(err.__context__, HeadTooLarge):  # raised in a parser callback
                self._refuse(431, str(err.__context__))
            else:  # as uvicorn's own data_received
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431, f"request head over {self.limits.max_header_bytes} bytes (--max-header-bytes)"
            )

    def _expect_head(self) -> None:
        self._in_head, self._head_bytes, self._headers_seen = True, 0, 0

    def on_message_begin(self) -> None:
        self._arm_head_timer()
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        if self._headers_seen > self.limits.max_headers:
            raise HeadTooLarge(f"more than {self.limits.max_headers} headers (--max-headers)")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._expect_head()
        super().on_message_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its body has its own deadline
        self._refuse(408, f"request head not received within {self.limits.header_timeout_s:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_head_timer()
        self._in_head = False
        self.refusal_warnings.warn("refused a client at %s: %s", self.client, message)
        body = message.encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\n"
            + b"content-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()


def protocol(limits: Limits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class bound to ``limits`` (uvicorn's ``http=`` option)."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"limits": limits})


#: Seconds an idle client connection is kept (above common clients' and balancers' 60 s).
KEEP_ALIVE_S = 75


def uvicorn_options(limits: Limits, importable: bool = False) -> dict:
    """uvicorn's options for these limits. ``importable``: name the protocol by import path
    (for ``--workers``, whose processes import it; each sets its limits with :func:`use`)."""
    http = f"{__name__}:GuardedProtocol" if importable else protocol(limits)
    # Idle client connections stay open longer than uvicorn's 5 s default, which equals
    # httpx's (and so the OpenAI SDK's) keep-alive expiry: with both at 5 s, a client reusing
    # a connection just as the server closes it sees a reset (ReadError) instead of a reply.
    return {"http": http, "timeout_keep_alive": KEEP_ALIVE_S}


def use(limits: Limits) -> None:
    """Make ``limits`` those of :class:`GuardedProtocol` in this process."""
    GuardedProtocol.limits = limits


def wrap(app, limits: Limits):
    """The app behind Starlette's Host allow-list and, when origins are given, its CORS."""
    if limits.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=limits.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[
                "authorization",
                "content-type",
                "x-trouter-policy",
                "x-trouter-max-cost-usd",
                "x-trouter-session",
                "x-trouter-request-id",
                "idempotency-key",
            ],
            expose_headers=[
                "x-trouter-model",
                "x-trouter-policy",
                "x-trouter-fallbacks",
                "x-trouter-request-id",
                "x-trouter-cost",
                "x-trouter-predicted-cost",
                "x-trouter-exploration",
            ],
        )
    return TrustedHostMiddleware(app, allowed_hosts=limits.allowed_hosts, www_redirect=False)


def refusal(headers: dict[str, str], limits: Limits) -> ProxyError | None:
    """403 for a cross-origin request that no ``--cors-origin`` allows."""
    origin = headers.get("origin")
    if origin is None or origin in limits.cors_origins or "*" in limits.cors_origins:
        return None
    host = headers.get("host", "")
    if origin in (f"http://{host}", f"https://{host}"):
        return None
    return ProxyError(
        403,
        f"cross-origin request from {origin[:100]!r} refused; allow it with --cors-origin",
        "invalid_request_error",
        "cross_origin_refused",
    )
