"""A persistent on-disk cache of LLM completions (SQLite in WAL mode).

Labelling and synthesis runs make thousands of calls and get interrupted (budget, Ctrl-C,
a crash); a rerun must not pay twice. SQLite gives atomic writes and lets several processes
share one cache file safely (WAL: readers never block the writer, writers wait on a busy
timeout). Only the request that determines the answer is hashed -- model, endpoint, messages
and sampling parameters -- never the API key, and values hold only the answer and its
accounting, so no secret reaches the file.

The cache is an optimisation, never a reason to lose an answer that was paid for: a read
that fails is a miss, and a write that fails (a full disk, a read-only or locked file) is
logged once as a warning and reported by :meth:`CompletionCache.put` returning False.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(
    litellm_model: str,
    api_base: str | None,
    messages: list[dict[str, Any]],
    temperature: float,
    max_tokens: int | None,
    response_format: Any,
    extra: dict[str, Any] | None,
) -> str:
    """sha256 of the canonical JSON of everything that determines a completion."""
    payload = {
        "litellm_model": litellm_model,
        "api_base": api_base,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "response_format": response_format,
        "extra": extra or {},
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CompletionCache:
    """Key -> JSON value store in one SQLite file, shared by threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.write_failures = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(SCHEMA)
        except (sqlite3.Error, OSError) as err:
            self._warn(f"cannot open the LLM cache {self.path} ({err}); running without it")
            self._conn = None

    def _warn(self, message: str) -> None:
        if not self.write_failures:
            log.warning(message)
        self.write_failures += 1

    def get(self, key: str) -> dict[str, Any] | None:
        if self._conn is None:
            return None
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT value FROM completions WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error:
            return None  # an unreadable cache is a miss
        if row is None:
            return None
        try:
            value = json.loads(row[0])
        except json.JSONDecodeError:
            return None  # a damaged entry is a miss, and is overwritten by the next put
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value``; False (and a warning, the first time) if it cannot be written."""
        if self._conn is None:
            self.write_failures += 1
            return False
        data = json.dumps(value, ensure_ascii=False)
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO completions (key, value, created) VALUES (?, ?, ?)",
                    (key, data, time.time()),
                )
        except (sqlite3.Error, OSError) as err:
            self._warn(
                f"cannot write to the LLM cache {self.path} ({err}); the answer is kept in "
                "memory and in the output, but a rerun would call for it again"
            )
            return False
        return True

    def __len__(self) -> int:
        if self._conn is None:
            return 0
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        if self._conn is None:
            return
        with self._lock:
            self._conn.close()
