"""Speed of the online router's own work: one event update and one routing decision.

Prints microseconds per served event, per background label, per decision on precomputed
features (what the proxy pays on top of its base router), and per full ``route`` call of
one query with a best-single base (encoder included). Run:
``TROUTER_DATA_DIR=tests/fixtures/data .venv/bin/python scripts/online_bench.py``
(``--no-drift``: level shifts off, to see what they cost; ``--cell-by linear`` or
``taxonomy``: another cell structure than 8 k-means cells; ``--base knn``: another base).
The last lines time what the proxy does to draw (exploration, the served A/B test): route
a new text, then decide it again, with the features remembered from routing or computed
anew.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from trouter.data.suites import load_suite
from trouter.evaluation.online import OnlineConfig, stream_folds
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import make_router
from trouter.routers.online import OnlineRouter


def per_call_us(calls, repeat: int = 1) -> tuple[float, float]:
    """(p50, p90) microseconds of the calls."""
    times = []
    for call in calls * repeat:
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e6)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def report(label: str, times: tuple[float, float]) -> None:
    print(f"{label}: {times[0]:.1f} / {times[1]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-drift", action="store_true", help="level shifts off (drift_z None)")
    parser.add_argument("--cell-by", default="kmeans", help="kmeans, taxonomy or linear")
    parser.add_argument("--base", default="best-single", help="the base router (e.g. knn)")
    args = parser.parse_args()
    drift = {"drift_z": None} if args.no_drift else {}
    weights = SCENARIOS["balanced"]
    (fold,) = stream_folds(load_suite("routerbench"), 0, OnlineConfig(tasks=("mbpp",)))
    stream, names = fold.test, fold.test.model_names
    base = make_router(args.base).fit(fold.train, fold.validation)
    cells = {"cells": 8} if args.cell_by == "kmeans" else {"cell_by": args.cell_by}
    router = OnlineRouter.around(base, fold.train, half_life=500.0, **cells, **drift)
    feats = router.features(list(stream.texts), weights)
    served, labels = [], []
    for t in range(len(stream)):
        common = {
            "t": t,
            "cell": int(feats["cell"][t]),
            "prior_performance": feats["performance"][t],
            "prior_cost": feats["cost"][t],
        }
        if "embedding" in feats:
            common["embedding"] = feats["embedding"][t]
        served.append(
            {
                "id": f"s{t}",
                "kind": "served",
                "model": names[t % len(names)],
                "score": float(stream.performance[t, t % len(names)]),
                **common,
            }
        )
        labels.append(
            {
                "id": f"l{t}",
                "kind": "label",
                **common,
                "scores": dict(zip(names, stream.performance[t].tolist(), strict=True)),
            }
        )
    report(
        "served event  p50/p90 us",
        per_call_us([lambda e=e: router.partial_fit([e]) for e in served]),
    )
    report(
        "label event   p50/p90 us",
        per_call_us([lambda e=e: router.partial_fit([e]) for e in labels]),
    )
    rows = [
        {k: feats[k][i : i + 1] for k in ("performance", "cost", "cell", "guard", "embedding")
         if k in feats}  # fmt: skip
        for i in range(len(stream))
    ]
    report(
        "decision      p50/p90 us",
        per_call_us([lambda r=r: router.decide_features(r, weights) for r in rows]),
    )
    texts = list(stream.texts)
    router.route(texts[:5], weights)  # warm the encoder
    report(
        "route 1 query p50/p90 us",
        per_call_us([lambda q=q: router.route([q], weights) for q in texts[:100]]),
    )
    rng = np.random.default_rng(0)

    def route_then_draw(query: str, forget: bool) -> None:
        """What the proxy does to draw: route a new text, then decide it again."""
        router._recent.clear()  # a text never seen
        router.route([query], weights)
        if forget:  # as before the features were remembered
            router._recent.clear()
        router.decide([query], weights, rng)

    for forget, label in ((False, "remembered"), (True, "asked again")):
        report(
            f"route + draw, {label} p50/p90 us",
            per_call_us([lambda q=q, f=forget: route_then_draw(q, f) for q in texts[100:200]]),
        )


if __name__ == "__main__":
    main()
