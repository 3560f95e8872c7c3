"""The learner thread of the proxy's feedback loop (:mod:`trouter.serving.learning`).

Every ``interval_s`` (or sooner, when woken by an accepted post) it reads the feedback and
background labels that any process added to the store after its watermark, plus
:data:`FOLD_LOOKBACK_ROWS` behind it, and applies them to the online router with
``partial_fit``; events are idempotent by id, so re-reading is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from trouter.routers.online import OnlineRouter
from trouter.store import Store, StoreUnavailable

log = logging.getLogger("trouter.serving")

#: Rows each fold re-reads behind its watermark: PostgreSQL hands out row numbers at insert
#: and commits them in any order, so a row may appear below rows already read.
FOLD_LOOKBACK_ROWS = 1000


class Learner:
    """Folds the store's feedback and labels into the online router (see module)."""

    def __init__(self, store: Store, service, metrics, interval_s: float) -> None:
        self.store, self.service, self.metrics = store, service, metrics
        self.interval_s = float(interval_s)
        self.watermark = {"served": 0, "label": 0}
        self.applied = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trouter-learner", daemon=True)

    @property
    def router(self) -> OnlineRouter:
        return self.service.router

    def start(self) -> None:
        self.fold()  # a restart rebuilds the state from the store before serving
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.fold()
            except StoreUnavailable as err:
                log.warning("learner: store unavailable, retrying (%s)", err)
            except Exception:  # noqa: BLE001  (learning must never stop serving)
                log.exception("learner: fold failed")

    def fold(self) -> int:
        """Apply the events not applied yet; how many were new."""
        mark = self.watermark
        served = self.store.served_events(max(0, mark["served"] - FOLD_LOOKBACK_ROWS))
        labels = self.store.label_events(max(0, mark["label"] - FOLD_LOOKBACK_ROWS))
        events = served + labels
        if not events:
            return 0
        for kind, found in (("served", served), ("label", labels)):
            if found:
                mark[kind] = max(mark[kind], found[-1]["seq"])
        before = len(self.router.seen_ids_)
        routed = self._as_router_events(events)
        fresh = [e for e in routed if e["kind"] == "served" and not self.router.seen(e["id"])]
        self.router.partial_fit(routed)
        self.metrics.watch.update(fresh, list(self.router.models_))
        new = len(self.router.seen_ids_) - before
        self.applied += new
        if new:
            self.metrics.learned.inc(new)
        return new

    def _as_router_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pool model names to the router's own names; events without features skipped."""
        to_router: Callable[[str], str | None] = _name_map(self.service)
        out = []
        for event in events:
            if "prior_performance" not in event:
                continue  # logged by a router without an online prior
            if event["kind"] == "served":
                name = to_router(event["model"])
                if name is None:
                    continue
                event = {**event, "model": name}
            else:
                scores = {to_router(k): v for k, v in event["scores"].items()}
                costs = {to_router(k): v for k, v in (event.get("costs") or {}).items()}
                event = {
                    **event,
                    "scores": {k: v for k, v in scores.items() if k is not None},
                    "costs": {k: v for k, v in costs.items() if k is not None},
                }
            out.append(event)
        return out

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _name_map(service) -> Callable[[str], str | None]:
    served = set(service.models)

    def to_router(name: str) -> str | None:
        return service.routes_as(name) if name in served else None

    return to_router
