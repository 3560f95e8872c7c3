"""A local OpenAI-compatible stand-in server for tests and benchmarks (no network, no API).

Every piece of trouter that calls an LLM does so through LiteLLM's OpenAI provider, so the
tests point it at this server on loopback instead of a paid API. The server is real HTTP
(stdlib ``ThreadingHTTPServer`` in a background thread, HTTP/1.1 keep-alive), so retries,
timeouts, streaming and dropped connections are exercised through the real client stack.

API
---
``StandIn(models=None, responder=None, latency_s=0.0)`` -- start with ``with StandIn() as s:``
or ``s.start()`` / ``s.stop()``; the pytest fixture ``standin`` (function scope) yields a
started one. Import it in a test module with ``from standin import standin  # noqa: F401``
(``tests/`` is on ``sys.path`` under pytest's default rootdir-based import mode).

Attributes and methods:

- ``base_url``: ``"http://127.0.0.1:PORT/v1"`` (use as LiteLLM ``api_base`` with model
  ``"openai/<name>"``; any API key is accepted, the ``Authorization`` header is recorded).
- ``models``: names listed by ``GET /v1/models`` (requests for other names are still served).
- ``responder``: ``callable(messages, model) -> str`` giving the reply text; the default is
  :func:`echo_responder` (deterministic, mentions model and question). Assign to change it.
- ``latency_s``: a sleep before every reply (simulates a slow upstream).
- ``fail_next(n, status=500, retry_after=None, model=None)``: the next ``n`` requests (for
  ``model`` only, when given) get an OpenAI-style error body with that status; a
  ``Retry-After`` header (seconds) is sent when ``retry_after`` is set.
- ``malformed_next(n, model=None)``: the next ``n`` requests get a 200 whose body is not JSON.
- ``hang_next(n, seconds, model=None)``: the next ``n`` requests wait ``seconds`` before a
  normal reply (use a client timeout below it to provoke timeouts). ``stop()`` cuts it short.
- ``drop_next(n, model=None)``: the next ``n`` requests have their connection closed with no
  response at all.
- ``calls``: ``collections.Counter`` of chat-completion requests per model name as sent in
  the body (LiteLLM strips the ``openai/`` prefix; faulted requests included);
  ``total_calls``; ``requests``: list of ``{"model", "body", "headers"}`` received, in order;
  ``max_in_flight``: the most chat requests handled at the same time (checks client limits).
- ``reset()``: clears counters, recorded requests and pending faults.

Replies carry ``usage`` with prompt/completion token counts estimated as about 4 characters
per token plus 4 per message (deterministic). ``stream: true`` returns SSE chunks
(``chat.completion.chunk``, words as deltas, then a final chunk with usage and
``data: [DONE]``), chunked transfer encoding.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Responder = Callable[[list[dict[str, Any]], str], str]


def echo_responder(messages: list[dict[str, Any]], model: str) -> str:
    """Deterministic reply naming the model and the start of the last user message."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content", "")
    if isinstance(content, list):  # multi-part content: keep the text parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return f"{model} answers: {' '.join(str(content).split())[:80]}"


def count_tokens(text: str) -> int:
    """A rough, deterministic token estimate (about 4 characters per token)."""
    return max(1, (len(text) + 3) // 4)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(4 + count_tokens(str(m.get("content", ""))) for m in messages)


@dataclass
class _Fault:
    kind: str  # error | malformed | hang | drop
    remaining: int
    model: str | None
    status: int = 500
    retry_after: float | None = None
    seconds: float = 0.0


class StandIn:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with a free port."""

    def __init__(
        self,
        models: list[str] | None = None,
        responder: Responder | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.models = list(models or ["standin-small", "standin-large"])
        self.responder: Responder = responder or echo_responder
        self.latency_s = latency_s
        self.calls: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in server is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def start(self) -> StandIn:
        handler = type("Handler", (_Handler,), {"standin": self})
        server = _Server(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 1024
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- programming behaviour -------------------------------------------------------------
    def fail_next(
        self,
        n: int,
        status: int = 500,
        retry_after: float | None = None,
        model: str | None = None,
    ) -> None:
        self._add(_Fault("error", n, model, status=status, retry_after=retry_after))

    def malformed_next(self, n: int, model: str | None = None) -> None:
        self._add(_Fault("malformed", n, model))

    def hang_next(self, n: int, seconds: float, model: str | None = None) -> None:
        self._add(_Fault("hang", n, model, seconds=seconds))

    def drop_next(self, n: int, model: str | None = None) -> None:
        self._add(_Fault("drop", n, model))

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.requests.clear()
            self.max_in_flight = 0
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, model: str, body: dict[str, Any], headers: dict[str, str]) -> _Fault | None:
        """Record a request and return the first pending fault that applies to it."""
        with self._lock:
            self.calls[model] += 1
            self.requests.append({"model": model, "body": body, "headers": headers})
            for fault in self._faults:
                if fault.remaining > 0 and fault.model in (None, model):
                    fault.remaining -= 1
                    return fault
        return None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out and hang up mid-reply are expected here, not test failures."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body go out in separate writes; with Nagle's algorithm each
    # keep-alive reply waited ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    standin: StandIn  # set on the subclass made in StandIn.start

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    # -- helpers ---------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = "rate_limit_error" if status == 429 else "server_error"
        if 400 <= status < 500 and status != 429:
            kind = "invalid_request_error"
        self._send_json(
            status, {"error": {"message": message, "type": kind, "code": None}}, headers
        )

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            data = [
                {"id": m, "object": "model", "owned_by": "standin"} for m in self.standin.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        elif self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok"})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
            messages = body["messages"]
            model = str(body["model"])
        except (json.JSONDecodeError, KeyError, TypeError):
            self._error(400, "body must be JSON with 'model' and 'messages'")
            return
        standin = self.standin
        with standin._lock:
            standin.in_flight += 1
            standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
        try:
            self._reply(standin, model, messages, body)
        finally:
            with standin._lock:
                standin.in_flight -= 1

    def _reply(
        self, standin: StandIn, model: str, messages: list[dict[str, Any]], body: dict[str, Any]
    ) -> None:
        fault = standin._take(model, body, {k.lower(): v for k, v in self.headers.items()})
        if fault is not None and fault.kind == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if fault is not None and fault.kind == "error":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            self._error(fault.status, f"injected error {fault.status}", headers)
            return
        if fault is not None and fault.kind == "hang":
            standin._stopping.wait(fault.seconds)
        if standin.latency_s:
            standin._stopping.wait(standin.latency_s)
        if fault is not None and fault.kind == "malformed":
            data = b"this is not JSON {"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        try:
            text = standin.responder(messages, model)
        except Exception as err:  # a broken responder is a test bug: make it visible
            self._error(500, f"responder raised {type(err).__name__}: {err}")
            return
        usage = {
            "prompt_tokens": prompt_tokens(messages),
            "completion_tokens": count_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.get("stream"):
            self._stream(ident, model, text, usage)
            return
        self._send_json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
        )

    def _stream(self, ident: str, model: str, text: str, usage: dict[str, int]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in _stream_events(ident, model, text, usage):
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _stream_events(
    ident: str, model: str, text: str, usage: dict[str, int]
) -> Iterator[dict[str, Any]]:
    base = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = model
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    words = text.split(" ")
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        yield {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield {**base, "choices": [], "usage": usage}


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A started :class:`StandIn` (default models and responder), stopped after the test."""
    server = StandIn().start()
    try:
        yield server
    finally:
        server.stop()
