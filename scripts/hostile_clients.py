"""Hostile HTTP clients on raw asyncio sockets, for soaks of the proxy (loopback only).

Each client sends one chat request the way a hostile or broken client would and returns how
it ended: the reply's status code, ``closed``/``reset`` when the proxy hung up without one,
``left`` when the client walked away itself. :data:`HOSTILE` names each client with the
outcomes that mean the proxy dealt with it. ``soak_hostile.py`` mixes them into its load.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"


@dataclass
class Target:
    """Where the hostile clients go and how long they wait for the proxy to refuse them."""

    port: int
    header_timeout_s: float
    body_timeout_s: float
    abort_within_s: float = 0.1
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    @property
    def patience_s(self) -> float:
        return max(self.header_timeout_s, self.body_timeout_s) + 15.0


def _request(body: bytes, host: str = HOST, content_type: str = "application/json", extra=b""):
    """A chat POST's head (and the length it declares) followed by ``body``."""
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    return head + extra + b"\r\n", body


async def _status(reader: asyncio.StreamReader, patience_s: float) -> str:
    """The reply's status code, or how the connection ended without one."""
    try:
        line = await asyncio.wait_for(reader.readline(), patience_s)
    except TimeoutError:
        return "no reply"
    except ConnectionError:
        return "reset"
    parts = line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float) -> None:
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)
    except ConnectionError:
        pass


async def _exchange(
    target: Target, first: bytes, trickle: bytes = b"", leave_after_s: float | None = None
) -> str:
    """Send ``first``, then ``trickle`` one byte per second; leave after ``leave_after_s``
    (without reading) or return the reply's status."""
    reader, writer = await asyncio.open_connection(HOST, target.port)
    slow = None
    try:
        writer.write(first)
        if leave_after_s is not None:
            await asyncio.sleep(leave_after_s)
            return "left"
        if trickle:
            slow = asyncio.create_task(_trickle(writer, trickle, 1.0))
        else:
            await writer.drain()
        return await _status(reader, target.patience_s)
    except ConnectionError:
        return "reset"
    finally:
        if slow is not None:
            slow.cancel()
        writer.transport.abort()


def _body(stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": "What is 17 times 23? Answer briefly."}]
    return json.dumps(
        {"model": "trouter-balanced", "messages": messages, "stream": stream}
    ).encode()


async def slow_head(target: Target) -> str:
    head, body = _request(_body())
    return await _exchange(target, head[:40], trickle=head[40:] + body)


async def slow_body(target: Target) -> str:
    head, body = _request(_body())
    return await _exchange(target, head + body[:5], trickle=body[5:])


async def huge_header(target: Target) -> str:
    head, body = _request(_body(), extra=b"X-Padding: " + b"a" * 2**20 + b"\r\n")
    return await _exchange(target, head + body)


async def huge_body(target: Target) -> str:
    messages = [{"role": "user", "content": "a" * 2_000_000}]
    head, body = _request(json.dumps({"model": "trouter-balanced", "messages": messages}).encode())
    return await _exchange(target, head + body)


async def text_plain(target: Target) -> str:
    return await _exchange(target, b"".join(_request(_body(), content_type="text/plain")))


async def cross_origin(target: Target) -> str:
    head, body = _request(_body(), extra=b"Origin: https://evil.example\r\n")
    return await _exchange(target, head + body)


async def foreign_host(target: Target) -> str:
    return await _exchange(target, b"".join(_request(_body(), host="evil.example")))


async def leave_mid_body(target: Target) -> str:
    head, body = _request(_body())
    return await _exchange(target, head + body[: len(body) // 2], leave_after_s=0.0)


async def leave_before_reply(target: Target) -> str:
    wait = target.rng.uniform(0.0, target.abort_within_s)
    return await _exchange(target, b"".join(_request(_body())), leave_after_s=wait)


async def leave_stream(target: Target) -> str:
    """Read a streamed reply's first event, then leave."""
    reader, writer = await asyncio.open_connection(HOST, target.port)
    try:
        writer.write(b"".join(_request(_body(stream=True))))
        status = await _status(reader, target.patience_s)
        if status != "200":
            return status
        async with asyncio.timeout(target.patience_s):
            while not (await reader.readline()).startswith(b"data:"):
                pass
        return "left"
    except (ConnectionError, TimeoutError):
        return "reset"
    finally:
        writer.transport.abort()


Hostile = Callable[[Target], Awaitable[str]]
#: Each hostile client and the outcomes that mean the proxy dealt with it.
HOSTILE: dict[str, tuple[Hostile, set[str]]] = {
    "slow_head": (slow_head, {"408", "closed", "reset"}),
    "slow_body": (slow_body, {"408"}),
    "huge_header_1mb": (huge_header, {"431", "reset", "closed"}),
    "huge_body_2mb": (huge_body, {"413", "reset", "closed"}),
    "text_plain": (text_plain, {"415"}),
    "cross_origin": (cross_origin, {"403"}),
    "foreign_host": (foreign_host, {"400"}),
    "leave_mid_body": (leave_mid_body, {"left"}),
    "leave_before_reply": (leave_before_reply, {"left"}),
    "leave_stream": (leave_stream, {"left"}),
}
