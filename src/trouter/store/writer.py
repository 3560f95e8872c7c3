"""Writing the decision log off the request path: a bounded queue and one writer thread.

:meth:`DecisionLog.submit` never blocks and never raises: when the queue is full (the store
is slow or down) the record is dropped and counted. The writer thread takes up to
``batch`` records at a time, lets ``prepare`` complete them (e.g. the online router's
features, computed here rather than on the request path), and inserts them in one
transaction. After the first record of a batch it lingers ``linger_s`` before taking the
rest, so that under load it wakes and commits about 1/linger_s times a second with large
batches rather than once per request (each wake-up takes the GIL from the event loop, and
each commit costs about a millisecond); a reader waiting for a record
(:meth:`wait_written`, e.g. feedback posted right after its reply) cuts the linger short.
A failed insert drops that batch (counted) and backs off, so a database outage costs
records, never requests. Records not yet written are kept by request id, so that feedback
arriving before the flush still finds its decision (:meth:`pending`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from trouter.config import TrouterError
from trouter.store.records import Decision, query_hash
from trouter.store.store import Store

log = logging.getLogger("trouter.store")

#: A record and its query text (held in memory only until the batch is written).
Item = tuple[Decision, str]
Prepare = Callable[[list[Item]], None]


class DecisionLog:
    """A bounded queue of decisions in front of a :class:`Store` (see module)."""

    def __init__(
        self,
        store: Store,
        max_queue: int = 10_000,
        batch: int = 256,
        interval_s: float = 0.2,
        linger_s: float = 0.05,
        log_text: bool = False,
        prepare: Prepare | None = None,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        purge_every_s: float | None = 3600.0,
    ) -> None:
        self.store, self.batch, self.interval_s = store, int(batch), float(interval_s)
        self.linger_s = float(linger_s)
        self.log_text, self.prepare = log_text, prepare
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=max_queue)
        self._pending: dict[str, Decision] = {}
        self._lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._flush_now = threading.Event()
        self.written = self.dropped = self.failures = 0
        #: CPU seconds the writer thread has spent preparing and writing batches
        self.cpu_s = 0.0
        self._thread = threading.Thread(target=self._run, name="trouter-decision-log", daemon=True)
        self._closed = False
        self.purge_every_s = purge_every_s
        self._purged_at = -math.inf
        self._thread.start()

    # ----- the request path ----------------------------------------------------------------
    def submit(self, decision: Decision, text: str) -> bool:
        """Queue one decision; False (and counted as dropped) when the queue is full."""
        if self._closed:
            self._drop(1)
            return False
        with self._lock:
            self._pending[decision.request_id] = decision
        try:
            self._queue.put_nowait((decision, text))
        except queue.Full:
            with self._lock:
                self._pending.pop(decision.request_id, None)
            self._drop(1)
            return False
        return True

    def pending(self, request_id: str) -> Decision | None:
        with self._lock:
            return self._pending.get(request_id)

    def wait_written(self, request_id: str, timeout_s: float) -> bool:
        """Wait until ``request_id`` has left the queue; True if it did in time."""
        deadline = time.monotonic() + timeout_s
        self._flush_now.set()  # cut the writer's linger short: someone waits for this one
        with self._flushed:
            while request_id in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._flushed.wait(left)
        return True

    # ----- the writer thread ---------------------------------------------------------------
    def _drop(self, n: int) -> None:
        self.dropped += n
        self._on_dropped(n)

    def _take(self) -> list[Item] | None:
        """The next batch (waiting up to ``interval_s`` for the first item); None at close."""
        try:
            first = self._queue.get(timeout=self.interval_s)
        except queue.Empty:
            return []
        if first is None:
            return None
        if self.linger_s > 0 and self._queue.qsize() < self.batch:
            # not a wait on the queue: puts do not wake it, a waiting reader does
            self._flush_now.wait(self.linger_s)
            self._flush_now.clear()
        items = [first]
        while len(items) < self.batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # seen again after this batch
                break
            items.append(item)
        return items

    def _run(self) -> None:
        backoff = 0.0
        while (items := self._take()) is not None:
            self._purge_when_due()
            if not items:
                continue
            if backoff:
                time.sleep(backoff)
            started = time.thread_time()
            ok = self._write(items)
            self.cpu_s += time.thread_time() - started
            backoff = 0.0 if ok else min(max(2 * backoff, 0.1), 2.0)

    def _purge_when_due(self) -> None:
        """Apply the retention TTL once per ``purge_every_s`` (first soon after start)."""
        if self.purge_every_s is None or time.monotonic() - self._purged_at < self.purge_every_s:
            return
        self._purged_at = time.monotonic()
        try:
            counts = self.store.purge()
            if any(counts.values()):
                log.info("retention: %s", counts)
        except Exception as err:  # noqa: BLE001  (retention must never stop the log)
            log.warning("retention purge failed (%s); retried in %g s", err, self.purge_every_s)

    def _write(self, items: list[Item]) -> bool:
        ok = True
        try:
            if self.prepare is not None:
                self.prepare(items)
            for decision, text in items:
                decision.query_hash = query_hash(text)
                decision.query_text = text if self.log_text else None
            self.store.write_decisions([d for d, _ in items])
            self.written += len(items)
            self._on_written(len(items))
        except TrouterError as err:
            ok = False
            self.failures += 1
            self._drop(len(items))
            log.warning("decision log: %d records dropped (%s)", len(items), err)
        except Exception:  # noqa: BLE001  (a bug in prepare must not stop the writer)
            ok = False
            self.failures += 1
            self._drop(len(items))
            log.exception("decision log: %d records dropped", len(items))
        with self._flushed:
            for decision, _ in items:
                self._pending.pop(decision.request_id, None)
            self._flushed.notify_all()
        return ok

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (within ``timeout_s``) and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._flush_now.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
