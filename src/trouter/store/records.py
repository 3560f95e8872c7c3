"""A decision as the store writes and reads it: the dataclass and its row codec.

The row codec runs on the writer thread for every request, so it is plain indexing; the
features and utilities are written compactly (:func:`_compact`) and restored on read.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any

from trouter.store import codec

log = logging.getLogger("trouter.store")


def query_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Decision:
    """One row of ``decisions`` (JSON fields as Python values)."""

    request_id: str
    created_at: float
    expires_at: float
    router: str
    model: str
    propensity: float = 1.0
    explored: bool = False
    router_version: str | None = None
    pool: str | None = None
    policy: str | None = None
    weights: list[float] | None = None
    cell: int | None = None
    features: dict[str, Any] | None = None
    utilities: dict[str, float] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    predicted_cost_usd: float | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    upstream_status: int | None = None
    fallbacks: int = 0
    query_hash: str | None = None
    query_text: str | None = None


#: Features a decision may carry for the online router's served A/B test, which its
#: feedback event must carry back (routers/online_challenge.arm_fields writes them).
ARM_FEATURES = ("ab_arm", "ab_policy")
DECISION_COLUMNS = [f.name for f in fields(Decision)]
JSON_COLUMNS = {"weights", "features", "utilities"}
#: Features holding numbers (a list, or a dict by model), whose nulls read back as NaN.
_NUMERIC_FEATURES = {"prior_performance", "prior_cost", "performance", "cost", "embedding"}


_row_values = attrgetter(*DECISION_COLUMNS)
_FEATURES_AT = DECISION_COLUMNS.index("features")
_UTILITIES_AT = DECISION_COLUMNS.index("utilities")
_JSON_AT = [i for i, name in enumerate(DECISION_COLUMNS) if name in JSON_COLUMNS]
_BOOL_AT = [i for i, f in enumerate(fields(Decision)) if f.type in ("bool", bool)]


def to_row(decision: Decision) -> list:
    # the writer thread's per-row work on every request: plain indexing, no generator
    values = list(_row_values(decision))
    values[_FEATURES_AT], values[_UTILITIES_AT] = _compact(decision)
    for i in _JSON_AT:
        if values[i] is not None:
            values[i] = codec.dumps(values[i])
    for i in _BOOL_AT:
        values[i] = int(values[i])
    return values


@lru_cache(maxsize=64)
def _pool_names(pool: str | None) -> tuple[tuple[str, ...], frozenset[str]]:
    names = tuple(pool.split(",")) if pool else ()
    return names, frozenset(names)


def _compact(decision: Decision) -> tuple[Any, Any]:
    """The features and utilities as written. A decision's row is mostly these, and
    SQLite's cost per row grows with its size, so the utilities are written as a list in
    the pool's order, and the prior's model names only where they are not the pool's
    (:func:`from_row` restores both; the online router hands its prior over at float32
    precision already)."""
    names, known = _pool_names(decision.pool)
    feats, utilities = decision.features, decision.utilities
    if names and isinstance(feats, dict) and tuple(feats.get("models", ())) == names:
        feats = {k: v for k, v in feats.items() if k != "models"}
    # only a full pool's: a model the request's limits excluded must read back absent
    if names and isinstance(utilities, dict) and utilities.keys() == known:
        utilities = [utilities[m] for m in names]
    return feats, utilities


def from_row(row: tuple) -> Decision:
    values = {
        name: codec.loads(v) if name in JSON_COLUMNS and v is not None else v
        for name, v in zip(DECISION_COLUMNS, row, strict=True)
    }
    names = _pool_names(values["pool"])[0]
    if isinstance(values["utilities"], list):  # in the pool's order (_compact)
        values["utilities"] = dict(zip(names, values["utilities"], strict=False))
    for name in ("weights", "utilities"):
        values[name] = codec.numbers(values[name])
    feats = values["features"]
    if isinstance(feats, dict):
        if names and "prior_performance" in feats and "models" not in feats:
            feats["models"] = list(names)  # the pool's own (_compact)
        values["features"] = _numeric_features(feats)
    values["explored"] = bool(values["explored"])
    return Decision(**values)


def _numeric_features(feats: dict[str, Any]) -> dict[str, Any]:
    """A decision's features with the nulls of its numeric ones read back as NaN."""
    return {k: codec.numbers(v) if k in _NUMERIC_FEATURES else v for k, v in feats.items()}


def prior_features(text: str | None, row: str) -> dict[str, Any] | None:
    """A decision's online prior (``prior_performance``, ``prior_cost``, NaN for null) and
    its other features; None where it has none: blanked by retention, logged by a router
    without an online prior, or not readable (warned of, so that one bad row cannot stop
    the learner)."""
    if text is None:
        return None
    try:
        feats = codec.loads(text)
    except ValueError as err:
        log.warning("store: the features of %s are not JSON (%s); the row is skipped", row, err)
        return None
    if not isinstance(feats, dict) or not {"prior_performance", "prior_cost"} <= set(feats):
        return None
    return _numeric_features(feats)
