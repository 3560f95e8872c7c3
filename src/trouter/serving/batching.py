"""Coalescing concurrent routing requests into one encoder batch.

Encoding a query costs milliseconds of CPU and the encoder runs one batch at a time, so under
concurrent load requests would queue for it one by one. Here requests that arrive while a
batch is being encoded wait in a queue and go into the *next* batch together: at low load a
request is routed alone with no added delay, at high load batches grow and throughput rises to
the encoder's batched rate.

A bad request must never fail its neighbours: queries are validated before they join a batch
(the caller gets the error at once), and if a batch still fails its queries are routed again
one by one, so only the query that fails gets an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from trouter.routers.base import Prediction
from trouter.serving.api import Policy, RouteResult, RoutingService, check_query


class RouteBatcher:
    """``await batcher.route(query, policy)``; one background task runs the batches."""

    def __init__(
        self,
        service: RoutingService,
        max_batch: int = 64,
        inline_batch: int = 64,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.service = service
        self.max_batch = max_batch
        self.inline_batch = inline_batch
        self.after_batch = after_batch  # e.g. bring the cache metrics up to date
        self._queue: asyncio.Queue[tuple[str, Policy, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def route(self, query: str, policy: Policy) -> RouteResult:
        check_query(query)  # a RoutingRequestError for this request only, before batching
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        assert self._queue is not None
        future: asyncio.Future[RouteResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((query, policy, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            batch = [item for item in batch if not item[2].done()]  # drop clients gone away
            if not batch:
                continue
            try:
                prediction = await self._predict([query for query, _, _ in batch])
            except Exception:  # noqa: BLE001  (some row broke the batch: find it, alone)
                for item in batch:
                    await self._route_alone(*item)
                continue
            if self.after_batch is not None:
                self.after_batch()
            for i, (query, policy, future) in enumerate(batch):
                row = prediction.rows(slice(i, i + 1))  # keeps a guard's override
                self._settle(
                    future, lambda q=query, r=row, p=policy: self.service.results([q], r, p)
                )

    async def _predict(self, queries: list[str]) -> Prediction:
        """Batches with a fast (static) encoder run on the loop itself (64 queries take a few
        ms): in a thread the prediction fought the busy loop for the GIL and a batch of 64
        waited hundreds of ms at 200 in flight. A slow encoder goes to a thread, so the loop
        keeps relaying other requests meanwhile."""
        if len(queries) <= self.inline_batch and getattr(self.service, "fast_encoder", False):
            return self.service.predict(queries)
        return await run_in_threadpool(self.service.predict, queries)

    async def _route_alone(self, query: str, policy: Policy, future: asyncio.Future) -> None:
        try:
            prediction = await self._predict([query])
        except Exception as err:  # noqa: BLE001  (this request's own error, for it alone)
            if not future.done():
                future.set_exception(err)
            return
        self._settle(future, lambda: self.service.results([query], prediction, policy))

    @staticmethod
    def _settle(future: asyncio.Future, make_results) -> None:
        if future.done():  # the client went away meanwhile
            return
        try:
            future.set_result(make_results()[0])
        except Exception as err:  # noqa: BLE001
            future.set_exception(err)
