"""Where the proxy keeps what it decided and what it was told: the decision log, feedback
events and background labels, on SQLite (embedded) or PostgreSQL (shared by replicas)."""

from trouter.store.backends import StoreError, StoreUnavailable, open_backend
from trouter.store.records import Decision, query_hash
from trouter.store.store import DEFAULT_TTL_S, SOURCES, Feedback, Store
from trouter.store.writer import DecisionLog

__all__ = [
    "DEFAULT_TTL_S",
    "SOURCES",
    "Decision",
    "DecisionLog",
    "Feedback",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_backend",
    "query_hash",
]
