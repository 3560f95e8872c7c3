"""The weight-free features of the queries an online router predicted last.

The proxy routes a request in a batch (``predict``) and, when the router explores or runs
the served A/B test, decides the same text again to draw (``decide``). The features of a
query (the base's prediction, its cell) do not depend on the weights or on the evidence,
so the second call reads them here instead of asking the base router again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: Queries remembered; each holds its features and a one-row slice of its batch's prediction
#: (which keeps that batch's prediction alive), so the bound is small.
RECENT_QUERIES = 64


class RecentFeatures:
    """A bounded, thread-safe LRU from query text to (features, base prediction, known)."""

    def __init__(self, size: int = RECENT_QUERIES) -> None:
        self.size = size
        self._rows: OrderedDict[str, tuple[dict[str, np.ndarray], Any, list[int]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, text: str) -> tuple[dict[str, np.ndarray], Any, list[int]] | None:
        """The remembered features of one query (copies: callers may change them)."""
        with self._lock:
            entry = self._rows.get(text)
            if entry is None:
                return None
            self._rows.move_to_end(text)
        feats, prediction, known = entry
        return {k: v.copy() for k, v in feats.items()}, prediction, list(known)

    def put(self, texts: list[str], feats: dict[str, np.ndarray], prediction, known) -> None:
        """Remember the last :data:`RECENT_QUERIES` of ``texts`` with their rows."""
        first = max(len(texts) - self.size, 0)
        rows = []
        for i in range(first, len(texts)):
            row = {k: np.array(v[i : i + 1]) for k, v in feats.items()}
            sliced = None if prediction is None else prediction.rows(np.array([i]))
            rows.append((texts[i], (row, sliced, list(known))))
        with self._lock:
            for text, entry in rows:
                self._rows[text] = entry
                self._rows.move_to_end(text)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
