"""What the proxy's logged traffic says: volumes, spend, feedback, and off-policy estimates.

The off-policy estimates (:mod:`trouter.store.off_policy`) answer "what would always
calling model *a* have scored on this traffic?" from the logged decisions, propensities and
feedback (``ips``, and ``dr`` with the router's predictions as its direct model) and from
the background labels (``label_mean``, and ``label_dr`` with the labels as its direct
model). A router that serves deterministically leaves the models it did not serve without
IPS support, and ``dr`` then rests on the router's own predictions, biased on a new task;
``label_dr`` rests on the judge's scores instead. Labels are chosen by the router's active
selection, not drawn uniformly, which the label estimates inherit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from trouter.store.off_policy import logged, off_policy
from trouter.store.records import Decision
from trouter.store.store import Store

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_span(text: str) -> float:
    """``30m``, ``24h``, ``7d``, ``2w`` as seconds."""
    match = _SPAN.match(text)
    if not match:
        raise ValueError(
            f"a time span is a number and a unit (s, m, h, d, w), e.g. 7d; not {text!r}"
        )
    return float(match[1]) * _UNIT_S[match[2]]


def traffic_report(store: Store, since_s: float | None = None, now: float | None = None,
                   rounds: int = 1000) -> dict[str, Any]:  # fmt: skip
    """Everything ``trouter report traffic`` prints, as one JSON-ready dict."""
    import time

    now = time.time() if now is None else now
    start = 0.0 if since_s is None else now - since_s
    decisions = store.decisions(start)
    received: dict[str, list[float]] = defaultdict(list)
    sources: dict[str, int] = defaultdict(int)
    feedback_rows = store.feedback_rows(start)
    for rid, score, source, _ in feedback_rows:
        received[rid].append(float(score))
        sources[source] += 1
    # a decision scored several times counts with its mean score
    scores = {rid: float(np.mean(values)) for rid, values in received.items()}
    labels, _ = store.label_spend(start)
    background = store.background_spend(start)  # the ledger: labels and judgements
    n = len(decisions)
    spend = sum(d.cost_usd or 0.0 for d in decisions)
    explored = [d for d in decisions if d.explored]
    return {
        "since": start,
        "until": now,
        "requests": n,
        "spend_usd": spend,
        "feedback_events": len(feedback_rows),
        "feedback_by_source": dict(sources),
        "feedback_coverage": (sum(d.request_id in scores for d in decisions) / n) if n else 0.0,
        "exploration_share": len(explored) / n if n else 0.0,
        "exploration_spend_usd": sum(d.cost_usd or 0.0 for d in explored),
        "background_labels": labels,
        "background_spend_usd": sum(background.values()),
        "background_spend_by_kind": background,
        "models": _per_model(decisions, scores, n),
        "cells": _per_cell(decisions, scores),
        "off_policy": off_policy(logged(decisions, scores, store.label_rows(start)), rounds),
        "timeline": timeline(decisions, scores),
    }


def _per_model(decisions: list[Decision], scores: dict, n: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in decisions:
        row = out.setdefault(d.model, {"requests": 0, "spend_usd": 0.0, "feedback": 0,
                                       "score_sum": 0.0, "latency_ms": 0.0})  # fmt: skip
        row["requests"] += 1
        row["spend_usd"] += d.cost_usd or 0.0
        row["latency_ms"] += d.latency_ms or 0.0
        if d.request_id in scores:
            row["feedback"] += 1
            row["score_sum"] += scores[d.request_id]
    for row in out.values():
        row["share"] = row["requests"] / n
        row["mean_score"] = row.pop("score_sum") / row["feedback"] if row["feedback"] else None
        row["latency_ms"] = row["latency_ms"] / row["requests"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["requests"]))


def _per_cell(decisions: list[Decision], scores: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Requests and spend per cell (task type), and the observed mean score per model in
    it: the learned utility table as the feedback shows it."""
    cells: dict[str, dict[str, Any]] = {}
    for d in decisions:
        key = "none" if d.cell is None else str(d.cell)
        cell = cells.setdefault(key, {"requests": 0, "spend_usd": 0.0, "models": {}})
        cell["requests"] += 1
        cell["spend_usd"] += d.cost_usd or 0.0
        if d.request_id in scores:
            seen = cell["models"].setdefault(d.model, [0, 0.0])
            seen[0] += 1
            seen[1] += scores[d.request_id]
    for cell in cells.values():
        cell["models"] = {
            m: {"feedback": c, "mean_score": s / c} for m, (c, s) in cell["models"].items()
        }
    return dict(sorted(cells.items(), key=lambda kv: -kv[1]["requests"]))


def timeline(decisions: list[Decision], scores: dict, buckets: int = 24) -> list[dict[str, Any]]:
    """Requests, spend and mean feedback score over ``buckets`` equal time slices."""
    if not decisions:
        return []
    times = np.array([d.created_at for d in decisions])
    edges = np.linspace(times.min(), times.max() + 1e-6, buckets + 1)
    slot = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, buckets - 1)
    out = []
    for b in range(buckets):
        members = [d for d, s in zip(decisions, slot, strict=True) if s == b]
        rated = [scores[d.request_id] for d in members if d.request_id in scores]
        out.append({
            "start": float(edges[b]),
            "requests": len(members),
            "spend_usd": sum(d.cost_usd or 0.0 for d in members),
            "mean_score": float(np.mean(rated)) if rated else None,
        })  # fmt: skip
    return out
