"""The decision log, feedback events and background labels: their queries and retention.

A *decision* (:mod:`trouter.store.records`) is what the proxy did for one request (router,
policy, the routing features, every candidate's predicted utility, the chosen model and its
propensity, tokens, cost, latency, upstream status). A *feedback event* scores one decision
in [0, 1]. A *label* is a full-information row: several models' scores on one query, never
served. Every row carries an expiry (the retention TTL, 7 days by default);
:meth:`Store.purge` first blanks an expired decision's query and features (what could
identify it) and deletes it one TTL later, so late feedback on it is answered "expired",
not "unknown".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from trouter.store import codec
from trouter.store.backends import Backend, open_backend
from trouter.store.records import (
    ARM_FEATURES,
    DECISION_COLUMNS,
    Decision,
    from_row,
    prior_features,
    to_row,
)

log = logging.getLogger("trouter.store")

DEFAULT_TTL_S = 7 * 24 * 3600.0
SOURCES = ("user", "judge", "grader")


@dataclass
class Feedback:
    request_id: str
    score: float
    source: str = "user"
    key: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def event_id(self) -> str:
        """The idempotency key; without one, one score per decision and source counts."""
        return self.key or f"{self.request_id}:{self.source}"


FeedbackStatus = Literal["accepted", "duplicate", "unknown", "expired"]


class Store:
    """The decision log, feedback and labels on one :class:`Backend`."""

    def __init__(self, backend: Backend, ttl_s: float = DEFAULT_TTL_S) -> None:
        if ttl_s <= 0:
            raise ValueError(f"the retention TTL must be positive, got {ttl_s}")
        self.backend, self.ttl_s = backend, float(ttl_s)

    @classmethod
    def open(cls, url: str, ttl_s: float = DEFAULT_TTL_S) -> Store:
        return cls(open_backend(url), ttl_s)

    @property
    def url(self) -> str:
        return self.backend.url

    def close(self) -> None:
        self.backend.close()

    # ----- decisions ---------------------------------------------------------------------
    def write_decisions(self, decisions: list[Decision]) -> None:
        """Insert a batch; a request id already logged keeps its first row."""
        if not decisions:
            return
        self.backend.insert_many(
            "decisions", DECISION_COLUMNS, [to_row(d) for d in decisions],
            "ON CONFLICT (request_id) DO NOTHING",
        )  # fmt: skip

    def decision(self, request_id: str) -> Decision | None:
        rows = self.backend.fetchall(
            f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE request_id = ?",
            (request_id,),
        )
        return from_row(rows[0]) if rows else None

    def decisions(self, since: float = 0.0) -> list[Decision]:
        rows = self.backend.fetchall(
            f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE created_at >= ? "
            "ORDER BY created_at",
            (since,),
        )
        return [from_row(r) for r in rows]

    # ----- feedback ------------------------------------------------------------------------
    def add_feedback(self, feedback: Feedback, now: float | None = None) -> FeedbackStatus:
        """Record one score for a logged decision; a replayed key is not counted twice."""
        now = time.time() if now is None else now
        rows = self.backend.fetchall(
            "SELECT expires_at FROM decisions WHERE request_id = ?", (feedback.request_id,)
        )
        if not rows:
            return "unknown"
        if rows[0][0] < now:
            return "expired"
        changed = self.backend.execute(
            "INSERT INTO feedback (event_id, request_id, score, source, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (
                feedback.event_id,
                feedback.request_id,
                float(feedback.score),
                feedback.source,
                feedback.created_at,
                feedback.created_at + self.ttl_s,
            ),
        )
        return "accepted" if changed else "duplicate"

    def served_events(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """Feedback joined with its decision, as the online router's ``served`` events
        (see :meth:`trouter.routers.online.OnlineRouter.partial_fit`), in insertion order
        after row ``after_seq``; each carries its row number as ``seq``."""
        rows = self.backend.fetchall(
            "SELECT f.event_id, f.score, f.source, f.created_at, d.model, d.cell, d.features, "
            "d.created_at, d.request_id, f.seq FROM feedback f JOIN decisions d "
            "ON d.request_id = f.request_id WHERE f.seq > ? ORDER BY f.seq",
            (after_seq,),
        )
        events = []
        for event_id, score, source, received, model, cell, features, decided, rid, seq in rows:
            event = {
                "seq": seq,
                "id": f"fb:{event_id}",
                "kind": "served",
                "t": decided / 3600.0,
                "model": model,
                "score": float(score),
                "source": source,
                "received_at": received,
                "request_id": rid,
            }
            feats = prior_features(features, rid)
            if feats is not None:
                event.update(
                    prior_performance=feats["prior_performance"],
                    prior_cost=feats["prior_cost"],
                    cell=int(cell or 0),
                )
                # the online router's served A/B arm, where the decision was drawn into it,
                # and its linear cells' features
                event.update({k: feats[k] for k in (*ARM_FEATURES, "embedding") if k in feats})
            events.append(event)
        return events

    def feedback_rows(self, since: float = 0.0) -> list[tuple[str, float, str, float]]:
        """(request id, score, source, time) of every feedback event since ``since``."""
        return self.backend.fetchall(
            "SELECT request_id, score, source, created_at FROM feedback WHERE created_at >= ? "
            "ORDER BY created_at",
            (since,),
        )

    # ----- background labels -----------------------------------------------------------------
    def add_label(
        self,
        event_id: str,
        scores: dict[str, float],
        costs: dict[str, float] | None = None,
        request_id: str | None = None,
        judge: str | None = None,
        spend_usd: float = 0.0,
        now: float | None = None,
        proposal: str | None = None,
    ) -> bool:
        now = time.time() if now is None else now
        changed = self.backend.execute(
            "INSERT INTO labels (event_id, request_id, scores, costs, judge, spend_usd, "
            "created_at, expires_at, proposal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (event_id) DO NOTHING",
            (
                event_id,
                request_id,
                codec.dumps(scores),
                None if costs is None else codec.dumps(costs),
                judge,
                float(spend_usd),
                now,
                now + self.ttl_s,
                proposal,
            ),
        )
        return bool(changed)

    def label_events(self, after_seq: int = 0) -> list[dict[str, Any]]:
        """Background labels with their decision's features, as ``label`` events, after
        row ``after_seq`` (labels without a logged decision are left out)."""
        rows = self.backend.fetchall(
            "SELECT l.event_id, l.scores, l.costs, l.created_at, d.cell, d.features, l.seq, "
            "l.proposal "
            "FROM labels l LEFT JOIN decisions d ON d.request_id = l.request_id "
            "WHERE l.seq > ? ORDER BY l.seq",
            (after_seq,),
        )
        events = []
        for event_id, scores, costs, created, cell, features, seq, proposal in rows:
            feats = prior_features(features, event_id)
            if feats is None:
                continue  # without the decision's prior a label cannot be placed
            events.append(
                {
                    "id": f"label:{event_id}",
                    "kind": "label",
                    "t": created / 3600.0,
                    "scores": codec.numbers(codec.loads(scores)),
                    "costs": None if costs is None else codec.numbers(codec.loads(costs)),
                    "prior_performance": feats["prior_performance"],
                    "prior_cost": feats["prior_cost"],
                    "cell": int(cell or 0),
                    "proposal_model": proposal,
                    **({"embedding": feats["embedding"]} if "embedding" in feats else {}),
                    "received_at": created,
                    "seq": seq,
                }
            )
        return events

    def label_rows(self, since: float = 0.0) -> list[tuple[str | None, dict[str, float], float]]:
        """(request id, every labelled model's score, time) of each label since ``since``."""
        rows = self.backend.fetchall(
            "SELECT request_id, scores, created_at FROM labels WHERE created_at >= ? "
            "ORDER BY created_at",
            (since,),
        )
        return [(rid, codec.numbers(codec.loads(scores)), float(t)) for rid, scores, t in rows]

    # ----- background spend --------------------------------------------------------------
    def add_spend(self, event_id: str, kind: str, usd: float, now: float | None = None) -> bool:
        """Record what one background job (``kind``: label, judge) cost; once per id."""
        now = time.time() if now is None else now
        changed = self.backend.execute(
            "INSERT INTO background_spend (event_id, kind, usd, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (event_id, kind, float(usd), now, now + self.ttl_s),
        )
        return bool(changed)

    def background_spend(self, since: float = 0.0) -> dict[str, float]:
        """USD of background jobs since ``since``, per kind (label, judge)."""
        rows = self.backend.fetchall(
            "SELECT kind, sum(usd) FROM background_spend WHERE created_at >= ? GROUP BY kind",
            (since,),
        )
        return {kind: float(usd) for kind, usd in rows}

    def label_spend(self, since: float = 0.0) -> tuple[int, float]:
        ((count, spend),) = self.backend.fetchall(  # fmt: skip
            "SELECT count(*), coalesce(sum(spend_usd), 0) FROM labels WHERE created_at >= ?",
            (since,),
        )
        return int(count), float(spend)

    # ----- retention -------------------------------------------------------------------------
    def purge(self, now: float | None = None) -> dict[str, int]:
        """Apply the TTL: blank expired decisions' text and features, delete them one TTL
        after expiry; delete expired feedback, labels and spend records. Counts of rows
        touched."""
        now = time.time() if now is None else now
        b = self.backend
        blanked = b.execute(
            "UPDATE decisions SET query_text = NULL, query_hash = NULL, features = NULL, "
            "utilities = NULL WHERE expires_at < ? AND (features IS NOT NULL OR "
            "query_text IS NOT NULL OR query_hash IS NOT NULL)",
            (now,),
        )
        deleted = b.execute("DELETE FROM decisions WHERE expires_at < ?", (now - self.ttl_s,))
        feedback = b.execute("DELETE FROM feedback WHERE expires_at < ?", (now,))
        labels = b.execute("DELETE FROM labels WHERE expires_at < ?", (now,))
        spend = b.execute("DELETE FROM background_spend WHERE expires_at < ?", (now,))
        return {"blanked": blanked, "decisions": deleted, "feedback": feedback, "labels": labels,
                "background_spend": spend}  # fmt: skip

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("decisions", "feedback", "labels"):
            (n,), = self.backend.fetchall(f"SELECT count(*) FROM {table}")  # fmt: skip
            out[table] = int(n)
        return out
