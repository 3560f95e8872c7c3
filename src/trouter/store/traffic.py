"""What the proxy's logged traffic says: volumes, spend, feedback, and off-policy estimates.

The off-policy estimates answer "what would always calling model *a* have scored on this
traffic?" from the logged decisions alone, using each decision's propensity ``p`` (the
probability with which the logging policy chose the served model) and its feedback score
``r`` (the mean when several scores arrived):

* IPS: ``mean(1[a_i = a] r_i / p_i)``;
* doubly robust: ``mean(q(x_i, a) + 1[a_i = a] (r_i - q(x_i, a_i)) / p_i)``, where ``q`` is
  the router's logged predicted performance of each model for that query.

Only decisions with feedback enter; intervals are percentile bootstraps over them. A
model the logging policy never served (``p`` = 1 for another model) has no IPS support:
its DR estimate is then the router's own prediction, which the ``support`` count shows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from trouter.store.store import Decision, Store

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


@dataclass
class Logged:
    """Decisions with feedback as arrays: chosen model index, propensity, reward, the
    predicted performance of every model (NaN where not logged), and the router's greedy
    choice (its best predicted utility: what it serves without exploring)."""

    models: list[str]
    chosen: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    predicted: np.ndarray
    greedy: np.ndarray


def logged(decisions: list[Decision], scores: dict[str, float]) -> Logged:
    names = {d.model for d in decisions} | {m for d in decisions for m in _predicted(d)}
    models = sorted(names | {m for d in decisions for m in d.utilities or {}})
    index = {m: j for j, m in enumerate(models)}
    rows = [d for d in decisions if d.request_id in scores]
    predicted = np.full((len(rows), len(models)), np.nan)
    for i, d in enumerate(rows):
        for name, value in _predicted(d).items():
            predicted[i, index[name]] = value
    return Logged(
        models,
        np.array([index[d.model] for d in rows], dtype=int),
        np.array([d.propensity for d in rows], dtype=float),
        np.array([scores[d.request_id] for d in rows], dtype=float),
        predicted,
        np.array([index[_greedy(d)] for d in rows], dtype=int),
    )


def _greedy(d: Decision) -> str:
    return max(d.utilities, key=d.utilities.get) if d.utilities else d.model


def _predicted(d: Decision) -> dict[str, float]:
    feats = d.features or {}
    if "prior_performance" in feats and "models" in feats:
        return dict(zip(feats["models"], feats["prior_performance"], strict=False))
    return dict(feats.get("performance") or {})


def estimates(log: Logged, a: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision IPS and DR terms of choosing model ``a`` (one index, or one per row)."""
    rows = np.arange(len(log.chosen))
    a = np.broadcast_to(np.asarray(a, dtype=int), log.chosen.shape)
    hit = (log.chosen == a).astype(float)
    ips = hit * log.reward / log.propensity
    fill = np.nanmean(log.reward) if len(log.reward) else 0.0
    q_a = np.nan_to_num(log.predicted[rows, a], nan=fill)
    q_chosen = np.where(
        np.isnan(log.predicted[rows, log.chosen]), q_a, log.predicted[rows, log.chosen]
    )
    dr = q_a + hit * (log.reward - q_chosen) / log.propensity
    return ips, dr


def bootstrap(values: np.ndarray, rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean and 95% percentile-bootstrap interval."""
    if len(values) == 0:
        return {"mean": None, "low": None, "high": None}  # JSON has no NaN
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high)}


def off_policy(log: Logged, rounds: int = 1000) -> dict[str, Any]:
    per_model = {}
    for a, name in enumerate(log.models):
        ips, dr = estimates(log, a)
        support = int((log.chosen == a).sum())
        per_model[name] = {
            "support": support,
            # never served: IPS has nothing to weigh, DR is the router's own prediction
            "ips": bootstrap(ips if support else ips[:0], rounds),
            "dr": bootstrap(dr, rounds),
        }
    supported = [m for m in per_model if per_model[m]["support"]]
    best = max(supported, key=lambda m: per_model[m]["dr"]["mean"]) if supported else None
    ips, dr = estimates(log, log.greedy)
    return {
        "decisions_with_feedback": int(len(log.reward)),
        "logged_policy": bootstrap(log.reward, rounds),
        # the current policy without its exploration: the router's greedy choice
        "greedy_policy": {"ips": bootstrap(ips, rounds), "dr": bootstrap(dr, rounds)},
        "best_single": best,
        "per_model": per_model,
    }


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
    labels, label_spend = store.label_spend(start)
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
        "background_spend_usd": label_spend,
        "models": _per_model(decisions, scores, n),
        "cells": _per_cell(decisions, scores),
        "off_policy": off_policy(logged(decisions, scores), rounds),
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
