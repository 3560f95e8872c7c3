"""Scores of replayed streams: utility per window, regret, safety and labelling spend."""

from __future__ import annotations

from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset

#: Window edges (queries seen) of the per-window utility.
WINDOWS = (0, 100, 250, 500, 1000, 2000, 5000)
#: Width of the sliding window of the safety check.
SAFETY_WINDOW = 200
#: Points of the stored running-mean curve (for plots).
CURVE_POINTS = 60
#: Queries after a drift within which utility should be back (the recovered gap is measured
#: after them), and the trailing window of a new model's share.
RECOVERY, SHARE_WINDOW = 500, 100
#: A new model's share is followed where the skyline gives it at least this share; the router
#: should reach this fraction of the skyline's share.
MIN_SKYLINE_SHARE, SHARE_TARGET = 0.10, 0.8


def window_names(n: int) -> list[tuple[str, int, int]]:
    edges = [e for e in WINDOWS if e < n] + [n]
    return [
        (f"{a}-{b if b != n or b in WINDOWS else 'end'}", a, b)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]


def first_pass(gain: np.ndarray, warmup: int = 50) -> int | None:
    """Queries until the running mean of ``gain`` is >= 0 and stays so (None: never)."""
    running = np.cumsum(gain) / np.arange(1, len(gain) + 1)
    below = np.flatnonzero(running[warmup - 1 :] < -1e-12) if len(gain) >= warmup else []
    if len(below) == 0:
        return warmup if len(gain) >= warmup else None
    last = int(below[-1]) + warmup
    return last + 1 if last + 1 < len(gain) else None


def reach(gain: np.ndarray, target: float, width: int = SAFETY_WINDOW) -> int | None:
    """Queries until a trailing ``width`` window's mean gain first reaches ``target``."""
    if len(gain) < width or not target > 0:
        return None
    window = np.convolve(gain, np.ones(width) / width, mode="valid")
    hit = np.flatnonzero(window >= target)
    return int(hit[0]) + width if len(hit) else None


def worst_window(gain: np.ndarray, width: int = SAFETY_WINDOW) -> float:
    """The lowest mean gain over any ``width`` consecutive queries (the whole stream if
    shorter)."""
    if len(gain) <= width:
        return float(np.mean(gain))
    return float(np.convolve(gain, np.ones(width) / width, mode="valid").min())


def curve(values: np.ndarray) -> list[list[float]]:
    """(queries seen, running mean) at up to :data:`CURVE_POINTS` points."""
    n = len(values)
    running = np.cumsum(values) / np.arange(1, n + 1)
    at = (
        np.unique(np.geomspace(10, n, CURVE_POINTS).astype(int)) if n >= 10 else np.arange(1, n + 1)
    )
    return [[int(i), float(running[i - 1])] for i in at]


def drift_metrics(served: np.ndarray, utility: np.ndarray, at: int) -> dict[str, Any]:
    """Utility over [T, T+500) and the gap to the best fixed model in hindsight (changed
    matrix) over [T+500, end); None where the stream ends first."""
    after, late = served[at : at + RECOVERY], slice(at + RECOVERY, len(served))
    gap = None
    if at + RECOVERY < len(served):
        gap = float(utility[late].mean(axis=0).max() - served[late].mean())
    return {
        "utility_after_change": float(after.mean()) if len(after) else None,
        "recovered_gap": gap,
    }


def new_model_metrics(chosen: np.ndarray, sky: np.ndarray | None, model: int, at: int) -> dict:
    """The share of the new ``model`` over [T, end), the skyline's too, and queries after T
    until the trailing 100-query share (pre-T queries count as 0) first reaches 80% of the
    skyline's share: only where the skyline's share is at least 10% (else None), None also
    where it never does (``new_model_reached`` tells the two apart)."""
    n = len(chosen)
    if at >= n:
        return {}
    mine = (chosen == model).astype(float)
    sky_share = None if sky is None else float(np.mean(sky[at:] == model))
    out = {"new_model_share": float(mine[at:].mean()), "new_model_skyline_share": sky_share,
           "new_model_queries_to_80pct": None, "new_model_reached": None}  # fmt: skip
    if sky_share is None or sky_share < MIN_SKYLINE_SHARE:
        return out
    running = np.cumsum(mine)
    start = np.maximum(np.arange(at, n) - SHARE_WINDOW + 1, 0)
    before = np.where(start > 0, running[np.maximum(start - 1, 0)], 0.0)
    trailing = (running[at:] - before) / SHARE_WINDOW
    hit = np.flatnonzero(trailing >= SHARE_TARGET * sky_share)
    out["new_model_reached"] = bool(len(hit))
    out["new_model_queries_to_80pct"] = int(hit[0]) + 1 if len(hit) else None
    return out


def change_metrics(served, chosen, traces, utility, order, world) -> dict[str, Any]:
    """The fields of a change scenario (none for the stationary stream)."""
    if world is None or world.change is None:
        return {}
    if world.arrival is None:
        return drift_metrics(served, utility[order], world.at)
    sky = traces.get("skyline")
    return new_model_metrics(chosen, None if sky is None else sky["chosen"], world.j, world.at)


def stream_metrics(
    traces: dict[str, dict[str, np.ndarray]],
    stream: RoutingDataset,
    order: np.ndarray,
    utility: np.ndarray,
    context: dict[str, Any],
    world=None,
) -> list[dict]:
    """One record per router of one replayed stream (see docs/online.md for each field);
    with ``world`` (:class:`~trouter.evaluation.online_changes.World`) also its change's."""
    n = len(order)
    served = {name: utility[order, trace["chosen"]] for name, trace in traces.items()}
    reference = served["best-single"]
    oracle = utility[order].max(axis=1)
    best_fixed = float(utility[order].mean(axis=0).max())
    quarter = slice(n - n // 4, n)
    sky = served.get("skyline")
    sky_gain = None if sky is None else float(sky[quarter].mean() - reference[quarter].mean())
    sky_stream_gain = None if sky is None else float(np.mean(sky - reference))
    records = []
    for name, trace in traces.items():
        u = served[name]
        gain = u - reference
        rows, chosen = order, trace["chosen"]
        served_usd = float(np.nansum(stream.cost[rows, chosen]))
        # every model a background label called, except the served one (its answer is had)
        called = trace["label_called"].copy()
        called[np.arange(n), chosen] = False
        label_usd = float(np.nansum(np.where(called, stream.cost[rows], 0.0)))
        last_gain = float(u[quarter].mean() - reference[quarter].mean())
        records.append(
            {
                **context,
                "router": name,
                "n_stream": n,
                "utility": float(u.mean()),
                "windows": {key: float(u[a:b].mean()) for key, a, b in window_names(n)},
                "gain_vs_best_single": float(gain.mean()),
                "regret_oracle": float(np.sum(oracle - u)),
                "regret_best_single": float(np.sum(-gain)),
                "best_fixed_utility": best_fixed,
                "last_quarter_gain": last_gain,
                "last_quarter_skyline_share": (
                    last_gain / sky_gain if sky_gain and sky_gain > 1e-9 else None
                ),
                "passes_best_single_at": first_pass(gain),
                "reaches_90pct_skyline_at": (
                    reach(gain, 0.9 * sky_stream_gain) if sky_stream_gain else None
                ),
                "worst_window_gap": worst_window(gain),
                "exploration_share": float(np.mean(trace["explored"])),
                "labels": int(trace["labelled"].sum()),
                "label_calls": int(called.sum()),
                "label_usd": label_usd,
                "served_usd": served_usd,
                "label_share_of_served": label_usd / served_usd if served_usd > 0 else None,
                "selection": np.bincount(chosen, minlength=len(stream.models)).tolist(),
                "models": stream.model_names,
                "seconds": float(trace.get("seconds", 0.0)),
                "curve": curve(u),
                **change_metrics(u, chosen, traces, utility, order, world),
            }
        )
    return records
