"""Keeping provider keys and internal upstream addresses out of replies, logs and metrics.

An upstream's error text is untrusted: it may echo the ``Authorization`` header, name the
host it could not reach, or both. Two rules hold for every message built from it:

- **Scrub before cutting.** A key that straddles the cut would otherwise leave most of itself
  behind. :func:`scrub_secrets` removes every fragment of :data:`MIN_FRAGMENT` or more
  characters of a configured key, wherever it sits (a body the upstream cut itself may end in
  half a key), and any ``Bearer`` token.
- **Clients never see where the upstreams live.** :func:`public` also replaces configured
  ``api_base`` hosts, IP literals and ``localhost`` with ``<upstream>``; the full detail, keys
  scrubbed, goes to the server log only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from trouter.llm.pool import ModelEndpoint

REDACTED = "***"
ADDRESS = "<upstream>"
#: The longest run of key characters a message may still hold (shorter runs are not secret).
MIN_FRAGMENT = 8
#: Public messages are cut to this many characters, after scrubbing.
MAX_MESSAGE_CHARS = 300
#: Longer texts are cut to this before scanning (a key fragment across this cut is under 8
#: characters after the scan, so scrubbing is still done before the message is cut).
MAX_SCAN_CHARS = 16_384

_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
_ADDRESSES = re.compile(
    r"(?i)\('[^']*',\s*\d+[^)]*\)"  # Python socket addresses: ('10.0.0.5', 8000)
    r"|\b(?:https?|wss?)://[^\s\"'<>()\[\]]+"  # URLs
    r"|\[[0-9a-f:.]*:[0-9a-f:.]*\](?::\d+)?"  # [IPv6]:port
    r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"  # IPv4:port
    r"|\blocalhost(?::\d+)?\b"
)


def configured_keys(endpoints: Iterable[ModelEndpoint]) -> list[str]:
    """The keys the pool's entries name, read from the environment now (as calls read them)."""
    keys = {os.environ.get(e.api_key_env) for e in endpoints if e.api_key_env}
    return sorted((k for k in keys if k and len(k) >= 4), key=len, reverse=True)


def scrub_secrets(text: str, endpoints: Iterable[ModelEndpoint]) -> str:
    """``text`` with configured keys (whole or any 8+ character fragment) and bearer tokens
    replaced by ``***``; texts over :data:`MAX_SCAN_CHARS` are cut to it first."""
    text = text[:MAX_SCAN_CHARS]
    for key in configured_keys(endpoints):
        text = _redact_fragments(text.replace(key, REDACTED), key)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


def _redact_fragments(text: str, key: str) -> str:
    """Replace every run of ``text`` that holds a ``MIN_FRAGMENT``-long piece of ``key``."""
    if len(key) < MIN_FRAGMENT:
        return text
    pieces = {key[i : i + MIN_FRAGMENT] for i in range(len(key) - MIN_FRAGMENT + 1)}
    spans: list[list[int]] = []
    for start in range(len(text) - MIN_FRAGMENT + 1):
        if text[start : start + MIN_FRAGMENT] in pieces:
            end = start + MIN_FRAGMENT
            if spans and start <= spans[-1][1]:
                spans[-1][1] = end
            else:
                spans.append([start, end])
    for start, end in reversed(spans):
        text = text[:start] + REDACTED + text[end:]
    return text


def upstream_hosts(endpoints: Iterable[ModelEndpoint]) -> list[str]:
    """``host:port`` and ``host`` of each configured ``api_base``, longest first."""
    found: set[str] = set()
    for endpoint in endpoints:
        if not endpoint.api_base:
            continue
        parts = urlsplit(endpoint.api_base)
        if parts.hostname:
            found.add(parts.hostname)
            if parts.port:
                found.add(f"{parts.hostname}:{parts.port}")
    return sorted(found, key=len, reverse=True)


def scrub_addresses(text: str, endpoints: Iterable[ModelEndpoint]) -> str:
    """``text`` with URLs, IP literals, ``localhost`` and configured upstream hosts replaced."""
    text = _ADDRESSES.sub(ADDRESS, text)
    for host in upstream_hosts(endpoints):
        text = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", ADDRESS, text)
    return text


def cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def public(text: str, endpoints: Iterable[ModelEndpoint], limit: int = MAX_MESSAGE_CHARS) -> str:
    """What a client may read of ``text``: no keys, no upstream addresses, at most ``limit``
    characters (cut after scrubbing)."""
    endpoints = list(endpoints)
    return cut(scrub_addresses(scrub_secrets(text, endpoints), endpoints), limit)
