"""Hostile and broken clients against the proxy, over raw sockets on loopback.

Oversized and over-numerous headers, heads and bodies sent slowly or not at all, more
connections than allowed, bodies not declared as JSON, foreign ``Host`` names and
cross-origin requests: each is refused (or closed) without reaching the upstream, and a
well-behaved client is still answered meanwhile. Limits are set small so every case is over in
about a second.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from standin import StandIn
from test_proxy import serving
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

import trouter
from trouter.llm.pool import Pool, PoolConfigError
from trouter.serving.limits import Limits
from trouter.serving.proxy import ProxySettings, create_app

LIMITS = dict(max_header_bytes=8192, max_headers=40, header_timeout_s=1.0, body_timeout_s=1.0)
BODY = b'{"model": "trouter-balanced", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module")
def proxy(routerbench_router_dir, tmp_path_factory) -> Iterator[dict]:  # noqa: F811
    service = trouter.load(routerbench_router_dir)
    standin = StandIn(models=service.models).start()
    pool = Pool.openai_compatible(service.models, standin.base_url, None, 1.0, 2.0)
    apps = {}
    with_cors = Limits(**LIMITS, max_connections=50, cors_origins=["https://app.example"])
    plain = Limits(**LIMITS, max_connections=6)
    for name, limits in (("plain", plain), ("cors", with_cors)):
        settings = ProxySettings(upstream_timeout_s=5.0, limits=limits)
        apps[name] = (
            create_app(trouter.load(routerbench_router_dir, pool), pool, settings),
            limits,
        )
    with serving(*apps["plain"]) as base, serving(*apps["cors"]) as cors_base:
        yield {"base": base, "cors": cors_base, "standin": standin}
    standin.stop()


@pytest.fixture
def up(proxy) -> StandIn:
    proxy["standin"].reset()
    return proxy["standin"]


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def head(path: str = "/health", method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}".encode()


def test_an_oversized_head_gets_431_while_others_are_served(proxy, up):
    sock = connect(proxy["base"])
    sock.sendall(head(extra="X-Big: ") + b"a" * 20_000)
    started = time.perf_counter()
    assert httpx.get(f"{proxy['base']}/health").status_code == 200
    assert time.perf_counter() - started < 1.0
    assert read_all(sock).startswith(b"HTTP/1.1 431")
    # a head that never ends is not read on: the server closed after its first 8 KiB
    endless = connect(proxy["base"])
    endless.sendall(head(extra="X-Big: "))
    sent = 0
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 200 * 2**20:
            endless.sendall(b"a" * 65536)
            sent += 65536
    assert sent < 50 * 2**20  # what the kernel's socket buffers took before the reset
    assert up.total_calls == 0


def test_too_many_headers_get_431(proxy):
    sock = connect(proxy["base"])
    sock.sendall(head(extra="".join(f"X-H{i}: v\r\n" for i in range(60)) + "\r\n"))
    assert read_all(sock).startswith(b"HTTP/1.1 431")


def test_a_head_sent_slowly_or_not_at_all_is_cut_off(proxy):
    silent, slow = connect(proxy["base"]), connect(proxy["base"])
    slow.sendall(head())
    started = time.perf_counter()
    for _ in range(8):  # one header byte every 0.25 s: never complete within the deadline
        try:
            slow.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.25)
    assert read_all(slow, 3.0).startswith(b"HTTP/1.1 408")
    assert time.perf_counter() - started < 3.0
    assert read_all(silent, 3.0).startswith(b"HTTP/1.1 408")


def test_a_body_sent_slowly_gets_408(proxy, up):
    sock = connect(proxy["base"])
    extra = f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    sock.sendall(head("/v1/chat/completions", "POST", extra) + BODY[:10])
    reply = read_all(sock, 4.0)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
    assert up.total_calls == 0


def test_connections_over_the_limit_are_closed_and_logged(proxy, caplog):
    with caplog.at_level(logging.WARNING, logger="trouter.serving"):
        held = [connect(proxy["base"]) for _ in range(6)]
        time.sleep(0.2)
        extra = connect(proxy["base"])
        extra.sendall(head() + b"\r\n")
        assert read_all(extra, 2.0) == b""  # closed without an answer
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{proxy['base']}/health").status_code == 200
    assert any("connection limit reached" in r.getMessage() for r in caplog.records)


def test_a_body_not_declared_as_json_gets_415(proxy, up):
    reply = httpx.post(
        f"{proxy['base']}/v1/chat/completions",
        content=BODY,
        headers={"content-type": "text/plain"},
    )
    assert reply.status_code == 415 and reply.json()["error"]["code"] == "unsupported_media_type"
    assert up.total_calls == 0


def test_foreign_host_and_cross_origin_requests_are_refused(proxy, up):
    url = f"{proxy['base']}/v1/chat/completions"
    json_type = {"content-type": "application/json"}
    rebinding = httpx.post(url, content=BODY, headers={**json_type, "host": "evil.example"})
    assert rebinding.status_code == 400
    cross = httpx.post(url, content=BODY, headers={**json_type, "origin": "http://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "cross_origin_refused"
    assert up.total_calls == 0
    assert httpx.post(url, content=BODY, headers=json_type).status_code == 200


def test_a_cors_origin_given_is_allowed(proxy, up):
    url = f"{proxy['cors']}/v1/chat/completions"
    origin = {"origin": "https://app.example"}
    preflight = httpx.options(
        url,
        headers={
            **origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-trouter-policy",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    reply = httpx.post(url, content=BODY, headers={**origin, "content-type": "application/json"})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.post(
        url,
        content=BODY,
        headers={"origin": "https://evil.example", "content-type": "application/json"},
    )
    assert other.status_code == 403


def test_an_oversized_pool_file_is_refused_before_parsing(tmp_path):
    pool = tmp_path / "pool.yaml"
    with pool.open("w") as out:
        out.write("models:\n")
        entry = "  - {name: m%d, litellm_model: openai/m%d}\n"
        out.writelines(entry % (i, i) for i in range(40_000))
    started = time.perf_counter()
    with pytest.raises(PoolConfigError, match="bytes"):
        Pool.load(pool)
    assert time.perf_counter() - started < 1.0


def test_the_default_connection_cap_leaves_descriptors_free(monkeypatch):
    """Under ``ulimit -n 180`` the proxy accepted until accept() failed, resetting clients
    silently; the default cap now stays below the descriptor limit."""
    from trouter.serving import limits

    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (180, 4096))
    assert limits.Limits().max_connections == 26  # (180 - 128 reserved) / 2
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (1_048_576, 1_048_576))
    assert limits.Limits().max_connections == 1024
