"""A provider key echoed by an upstream never leaves the proxy, whole or in part.

The stand-in upstream answers with an error whose long text holds the pool's key at one
offset; every offset is tried, on every way the text can travel: a JSON error (500, 401, 400,
429, a plain-text 500), a stream refused before its first chunk, a stream that breaks after
it, the serve log and ``/metrics``. No piece of the key of 8 or more characters may appear
anywhere. Internal upstream addresses reach the log only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re

import httpx
import pytest
from standin import _Handler
from test_proxy import KEY_ENV, running_proxy
from test_serving_api import routerbench_router_dir  # noqa: F401  (shared session fixture)

from trouter.llm.pool import ModelEndpoint
from trouter.serving.proxy import ProxySettings
from trouter.serving.scrub import MIN_FRAGMENT, public, scrub_secrets

SECRET = "sk-proj-PROXYSECRET-0123456789abcdefGHIJ"
FILLER = " ".join(f"word{i % 10}x" for i in range(80))  # 480 characters, no key pieces
#: Longer than the 300 characters a client is shown: the key is tried on both sides of the cut.
BODY_CHARS = 340
OFFSETS = range(BODY_CHARS - len(SECRET) + 1)
#: (mode, HTTP status the upstream sends, stream?)
CASES = [
    ("json", 500, False),
    ("json", 401, False),
    ("json", 400, False),
    ("json", 429, False),
    ("plain", 500, False),
    ("json", 401, True),
    ("mid-stream", 200, True),
]
JSON = {"content-type": "application/json"}


def leaky_text(offset: int) -> str:
    """An error text of ``BODY_CHARS`` characters with the key starting at ``offset``."""
    room = BODY_CHARS - len(SECRET)
    return FILLER[:offset] + SECRET + FILLER[offset:room]


def key_pieces(text: str) -> list[str]:
    """Every run of 8+ characters of the key found in ``text``."""
    pieces = {SECRET[i : i + MIN_FRAGMENT] for i in range(len(SECRET) - MIN_FRAGMENT + 1)}
    return [text[i : i + 20] for i in range(len(text)) if text[i : i + MIN_FRAGMENT] in pieces]


class _Leaky(_Handler):
    """Answers each request as its last user message orders: ``{"mode", "status",
    "offset"}``, with an error text that holds the key."""

    def _reply(self, standin, model, messages, body) -> None:
        order = json.loads(messages[-1]["content"])
        text = leaky_text(order["offset"])
        if order["mode"] == "plain":
            data = text.encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif order["mode"] == "mid-stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            first = {
                "id": "chatcmpl-leak",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
            }
            self._chunk(f"data: {json.dumps(first)}\n\n".encode())
            self._chunk(f"data: {json.dumps({'error': {'message': text}})}\n\n".encode())
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        else:
            self._error(order["status"], text)


async def _ask_all(base: str, model: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def one(mode: str, status: int, stream: bool, offset: int) -> httpx.Response:
            order = json.dumps({"mode": mode, "status": status, "offset": offset})
            request = {
                "model": model,
                "messages": [{"role": "user", "content": order}],
                "stream": stream,
            }
            async with gate:
                return await client.post(
                    "/v1/chat/completions", content=json.dumps(request), headers=JSON
                )

        return await asyncio.gather(*(one(*case, offset) for case in CASES for offset in OFFSETS))


# LiteLLM builds an exception per error: its run is the slow one (about 2,000 requests)
@pytest.mark.parametrize("path", ["auto", "httpx", pytest.param("litellm", marks=pytest.mark.slow)])
def test_no_piece_of_the_key_leaves_on_any_path_at_any_offset(
    routerbench_router_dir,  # noqa: F811
    tmp_path,
    caplog,
    path,
):
    settings = ProxySettings(upstream=path, cooldown_failures=0, upstream_timeout_s=10)
    caplog.set_level(logging.DEBUG)
    with running_proxy(routerbench_router_dir, tmp_path, settings) as running:
        os.environ[KEY_ENV] = SECRET  # read at call time, as a rotated key would be
        upstream = running["standin"]
        upstream._server.RequestHandlerClass = type("Handler", (_Leaky,), {"standin": upstream})
        model = running["service"].models[0]
        replies = asyncio.run(_ask_all(running["base"], model))
        metrics = httpx.get(f"{running['base']}/metrics").text
    assert len(replies) == len(CASES) * len(OFFSETS)
    statuses = {r.status_code for r in replies}
    assert statuses <= {200, 400, 429, 502}, statuses
    assert 200 in statuses  # the streams that broke after their first chunk
    leaks = [(r.status_code, piece) for r in replies for piece in key_pieces(r.text)]
    assert leaks == []
    # the key's last characters sit right before the old 300-character cut at some offset
    assert any("***" in r.text for r in replies)
    assert key_pieces(caplog.text) == []
    assert key_pieces(metrics) == []


def test_clients_never_see_the_upstream_address_and_the_log_keeps_it(
    routerbench_router_dir,  # noqa: F811
    tmp_path,
    caplog,
):
    caplog.set_level(logging.INFO)
    settings = ProxySettings(cooldown_failures=0, upstream_timeout_s=5)
    with running_proxy(routerbench_router_dir, tmp_path, settings) as running:
        upstream = running["standin"]
        port = upstream.port
        upstream.stop()  # nothing listens there now: connection refused
        model = running["service"].models[0]
        replies = [
            httpx.post(
                f"{running['base']}/v1/chat/completions",
                content=json.dumps(
                    {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
                ),
                headers=JSON,
            )
            for extra in ({}, {"stream": True})
        ]
    for reply in replies:
        assert reply.status_code == 502
        assert reply.json()["error"]["code"] == "upstream_connection"
        assert "127.0.0.1" not in reply.text and str(port) not in reply.text
    assert f"127.0.0.1:{port}" in caplog.text  # the operator can still see where


def test_public_text_scrubs_before_it_cuts_and_hides_addresses(monkeypatch):
    monkeypatch.setenv("LEAKY_KEY", SECRET)
    endpoint = ModelEndpoint(
        name="m",
        litellm_model="openai/m",
        api_base="http://vllm.internal:8000/v1",
        api_key_env="LEAKY_KEY",
    )
    for offset in range(280, 300):  # the key straddles the cut
        text = "x" * offset + f"Bearer {SECRET} more"
        assert key_pieces(public(text, [endpoint])) == []
    cut_by_upstream = "invalid key " + SECRET[:-6]  # an upstream that cut its own echo
    assert key_pieces(scrub_secrets(cut_by_upstream, [endpoint])) == []
    shown = public(
        "Cannot connect to host vllm.internal:8000 ssl:default [Connect call failed "
        "('10.2.3.4', 8000)] at http://vllm.internal:8000/v1/chat/completions or [::1]:8000",
        [endpoint],
    )
    assert not re.search(r"vllm|10\.2|::1|8000", shown), shown
