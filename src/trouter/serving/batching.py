"""Coalescing concurrent routing requests into one encoder batch.

Encoding a query costs milliseconds of CPU and the encoder runs one batch at a time, so under
concurrent load requests would queue for it one by one. Here requests that arrive while a
batch is being encoded wait in a queue and go into the *next* batch together: at low load a
request is routed alone with no added delay, at high load batches grow and throughput rises to
the encoder's batched rate.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.concurrency import run_in_threadpool

from trouter.routers.base import Prediction
from trouter.serving.api import Policy, RouteResult, RoutingService


class RouteBatcher:
    """``await batcher.route(query, policy)``; one background task runs the batches."""

    def __init__(self, service: RoutingService, max_batch: int = 64) -> None:
        self.service = service
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[str, Policy, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None

    async def route(self, query: str, policy: Policy) -> RouteResult:
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
            queries = [query for query, _, _ in batch]
            try:
                prediction = await run_in_threadpool(self.service.predict, queries)
            except Exception as err:  # one bad batch fails its requests, not the worker
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for i, (query, policy, future) in enumerate(batch):
                if future.done():  # the client went away
                    continue
                row = Prediction(
                    prediction.models,
                    prediction.performance[i : i + 1],
                    prediction.cost[i : i + 1],
                )
                future.set_result(self.service.results([query], row, policy)[0])
