"""Background labelling and sampled judging in the proxy (``serve --judge``).

After a routed, non-streamed reply has been sent, the proxy may spend money on learning:

* a **background label**: for a query the online router asks to label (its label
  priority, :func:`trouter.routers.online_labels.label_priority`, at least ``threshold``; and,
  with ``label_rate``, within a :class:`~trouter.routers.online_labels.LabelBudget` of
  that many labels per 1,000 queries), every other pool model answers the same messages,
  the judge scores every answer (the served one included) with the labeller's judge prompt
  and parser, and the scores go to the store's labels table, where the learner folds them
  like ``trouter feedback import-labels`` rows;
* a **sampled judgement**: a share ``judge_rate`` of served answers is scored alone and
  stored as served feedback with ``source=judge``.

Every background call is costed from its usage and the pool's prices and charged to a daily
USD budget (UTC days). The budget is the store's: every job records what it cost in the
store's spend ledger (finished or not), and the day's spend is the ledger's sum (every
worker's and replica's, a restart's too) plus this process's spend not yet recorded. A job
starts only while the day's budget is not spent and stops between calls once it is, so a day
may end over budget by at most the calls of the jobs in flight (in every process sharing the
store). Jobs wait in a bounded queue and run under a semaphore; a full queue drops the job
and counts it. Nothing here runs before the reply has gone, and no failure here reaches the
request.

There is no reference answer in serving, so the judge grades each answer against the
question alone (:data:`NO_REFERENCE`); a verdict it cannot parse leaves that model out of
the label rather than scoring it 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.labelling.judge import VerdictError, judge_messages, parse_verdict
from trouter.llm.pool import ModelEndpoint
from trouter.routers.online import OnlineRouter
from trouter.routers.online_labels import LabelBudget
from trouter.serving import upstream
from trouter.serving.background_settings import BackgroundMetrics, BackgroundSettings
from trouter.store import Feedback

log = logging.getLogger("trouter.serving")

NO_REFERENCE = (
    "(none available: judge whether the candidate answers the question correctly and "
    "completely on its own merits)"
)
#: The running job's spend (one list per worker task).
_JOB_SPEND: ContextVar[list[float] | None] = ContextVar("background_job_spend", default=None)
#: How often the day's background spend is re-read from the (shared) store, in seconds.
SPEND_REFRESH_S = 1.0
DAY_S = 86_400.0
_WEIGHTS = re.compile(r"weights\(([^,]+),([^)]+)\)")

Complete = Callable[[ModelEndpoint, list[dict], dict], Awaitable[dict]]


@dataclass
class _Job:
    kind: str  # label | judge
    request_id: str
    served: str
    messages: list[dict]
    answer: str
    policy: str | None
    question: str


class BackgroundLabeller:
    """Background labels and sampled judgements for one proxy process (see module)."""

    def __init__(
        self,
        settings: BackgroundSettings,
        loop,  # trouter.serving.learning.FeedbackLoop
        endpoints: dict[str, ModelEndpoint],
        complete: Complete,
        registry: CollectorRegistry | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings, self.loop, self.endpoints = settings, loop, endpoints
        self.complete = complete
        self.metrics = BackgroundMetrics(registry)
        self.judge = endpoints.get(settings.judge) or ModelEndpoint(
            name=settings.judge, litellm_model=settings.judge
        )
        self.models = list(loop.service.models)
        self._rng = np.random.default_rng(seed)
        self._budget = (
            LabelBudget(rate=settings.label_rate) if settings.label_rate is not None else None
        )
        self._routed = 0
        self._day, self._spent = self._today(), 0.0
        self._stored, self._stored_at = 0.0, 0.0  # the store's spend today, and when read
        self._queue: asyncio.Queue[_Job] | None = None
        self._workers: list[asyncio.Task] = []

    # ----- spend -------------------------------------------------------------------------
    @staticmethod
    def _today() -> float:
        return time.time() // DAY_S * DAY_S

    async def spent_today(self) -> float:
        """USD spent on background calls today: what the store records (every worker's and
        replica's labels and judgements, re-read at most every ``SPEND_REFRESH_S``, off the
        event loop) plus this process's spend not recorded yet (jobs in progress, or
        failed after paying)."""
        if self._today() != self._day:
            self._day, self._spent, self._stored_at = self._today(), 0.0, 0.0
        if time.monotonic() - self._stored_at >= SPEND_REFRESH_S:
            try:
                spend = await asyncio.to_thread(self.loop.store.background_spend, self._day)
                self._stored = sum(spend.values())
                self._stored_at = time.monotonic()
            except Exception as err:  # noqa: BLE001 - a store outage keeps the last figure
                log.warning("background: store spend unreadable (%s); using the last", err)
        return self._stored + self._spent

    async def over_budget(self) -> bool:
        return await self.spent_today() >= self.settings.budget_usd_per_day

    def _charge(self, usd: float | None) -> float:
        usd = float(usd or 0.0)
        self._spent += usd
        if (job := _JOB_SPEND.get()) is not None:
            job[0] += usd
        self.metrics.spend.inc(usd)
        return usd

    async def _record_spend(self, job: _Job, usd: float) -> None:
        """Put what ``job`` cost (finished or not) in the store's ledger, where every
        process sharing the store counts it; kept here if the store cannot take it."""
        if usd <= 0:
            return
        event_id = f"{job.request_id}:{job.kind}"
        try:
            await asyncio.to_thread(self.loop.store.add_spend, event_id, job.kind, usd)
        except Exception as err:  # noqa: BLE001 - counted here instead, never lost
            log.warning("background: spend of %s not recorded (%s)", event_id, err)
            return
        self._spent = max(self._spent - usd, 0.0)
        self._stored += usd  # until the next read of the store says so itself

    # ----- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers (call inside the running event loop)."""
        if self._queue is not None:
            return
        self._queue = asyncio.Queue(self.settings.max_queue)
        self._workers = [
            asyncio.create_task(self._work()) for _ in range(self.settings.max_concurrency)
        ]

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue = [], None

    def pending(self) -> int:
        """Jobs queued or running."""
        return 0 if self._queue is None else self._queue._unfinished_tasks

    async def idle(self) -> None:
        """Until every queued job is done (tests and replays)."""
        if self._queue is not None:
            await self._queue.join()

    # ----- the request path (after the reply is sent) --------------------------------------
    async def offer(self, request_id: str, plan, messages: list[dict], body: bytes) -> None:
        """Queue the jobs one answered, routed request (its reply ``body``) deserves; never
        waits or raises."""
        try:
            self._offer(request_id, plan, messages, json.loads(body))
        except Exception:  # noqa: BLE001 - nothing here may reach the request
            log.exception("background: offer failed")

    async def offer_stream(self, request_id: str, plan, messages: list[dict], collected: dict):
        """As :meth:`offer`, for a streamed reply whose answer ``collected`` gathered (none
        if the stream did not finish)."""
        if not collected.get("finished"):
            return
        data = {"model": collected["model"],
                "choices": [{"message": {"content": collected["text"]}}]}  # fmt: skip
        try:
            self._offer(request_id, plan, messages, data)
        except Exception:  # noqa: BLE001 - nothing here may reach the request
            log.exception("background: offer failed")

    def _offer(self, request_id: str, plan, messages: list[dict], data: dict) -> None:
        if self._queue is None:
            self.start()
        self._routed += 1
        served = data.get("model")
        answer = _text(data)
        route = plan.route
        if served not in self.endpoints or answer is None or route is None:
            return
        job = _Job("judge", request_id, served, messages, answer, route.policy, route.query)
        if self.settings.judge_rate > 0 and self._rng.random() < self.settings.judge_rate:
            self._put(job)
        self._put(_Job(**{**job.__dict__, "kind": "label"}))

    def _put(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.jobs.labels(kind=job.kind, outcome="dropped").inc()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            spent = [0.0]  # what this job's calls cost (_charge adds to it)
            _JOB_SPEND.set(spent)  # each worker is its own task: its own context
            try:
                if await self.over_budget():
                    outcome = "over_budget"
                elif job.kind == "judge":
                    outcome = await self._judge_served(job)
                else:
                    outcome = await self._label(job)
            except Exception:  # noqa: BLE001 - one failed job never stops the workers
                log.exception("background: %s job failed", job.kind)
                outcome = "failed"
            finally:
                self._queue.task_done()
            await self._record_spend(job, spent[0])
            if outcome is not None:
                self.metrics.jobs.labels(kind=job.kind, outcome=outcome).inc()

    # ----- the jobs ----------------------------------------------------------------------
    async def _judge_served(self, job: _Job) -> str:
        score, _ = await self._verdict(job.question, job.answer)
        if score is None:
            return "failed"
        feedback = Feedback(job.request_id, score, source="judge")
        status = await asyncio.to_thread(self.loop.add_feedback, feedback)
        return "done" if status in ("accepted", "duplicate") else "failed"

    async def _label(self, job: _Job) -> str | None:
        """None when the query is not selected (nothing spent, nothing counted)."""
        priority, proposal, targets = await asyncio.to_thread(
            self._priority, job.question, job.policy
        )
        if priority < self.settings.threshold:
            return None
        calls = [m for m in targets if m != job.served and m in self.endpoints]
        share = len(calls) / max(len(self.models) - 1, 1)  # of a full label's calls
        if self._budget is not None and not self._budget.take(self._routed - 1, priority, share):
            return None
        answers, spend = {job.served: job.answer}, 0.0
        for model in calls:
            if await self.over_budget():
                break
            text, usd = await self._call("answer", self.endpoints[model], job.messages, {})
            spend += usd
            if text is not None:
                answers[model] = text
        scores: dict[str, float] = {}
        for model, text in answers.items():
            if await self.over_budget():
                break
            score, usd = await self._verdict(job.question, text)
            spend += usd
            if score is not None:
                scores[model] = score
        if len(scores) < 2:
            return "failed"  # one score alone says nothing full-information
        await asyncio.to_thread(self._store_label, job.request_id, scores, spend, proposal)
        return "done"

    def _store_label(
        self, request_id: str, scores: dict[str, float], spend: float, proposal: str | None
    ) -> None:
        # the decision (with the features a label is placed by) may still be queued
        if self.loop.log.pending(request_id) is not None:
            self.loop.log.wait_written(request_id, 5.0)
        self.loop.store.add_label(f"{request_id}:background", scores, None, request_id,
                                  self.judge.name, spend, proposal=proposal)  # fmt: skip
        if self.loop.learner is not None:
            self.loop.learner.wake()

    def _priority(self, question: str, policy: str | None) -> tuple[float, str | None, list]:
        """The online router's label priority for the query (a frozen router: always), its
        proposal (what it would serve with its anchor lifted, recorded with the label) and
        the models the label calls (every pool model, or a newcomer's pair)."""
        router = self.loop.service.router
        if not isinstance(router, OnlineRouter):
            return float("inf"), None, list(self.models)
        from trouter.encoders import get_encoder

        with get_encoder(router.encoder).transient():
            (made,) = router.decide([question], _policy_weights(policy))
        return float(made["label_priority"]), made["proposal_model"], made["label_models"]

    async def _verdict(self, question: str, answer: str) -> tuple[float | None, float]:
        messages = judge_messages(question, NO_REFERENCE, answer)
        params = {"temperature": 0, "max_tokens": self.settings.judge_max_tokens}
        text, usd = await self._call("judge", self.judge, messages, params)
        if text is None:
            return None, usd
        try:
            return parse_verdict(text), usd
        except VerdictError as err:
            log.info("background: judge verdict masked: %s", err)
            self.metrics.calls.labels(kind="judge", outcome="unparsed").inc()
            return None, usd

    async def _call(self, kind, endpoint, messages, params) -> tuple[str | None, float]:
        """(reply text or None, USD charged); upstream failures are counted, not raised."""
        try:
            data = await self.complete(endpoint, messages, params)
        except Exception as err:  # noqa: BLE001 - a failing model only loses its score
            log.info("background: %s call to %s failed: %s", kind, endpoint.name, err)
            self.metrics.calls.labels(kind=kind, outcome="error").inc()
            return None, 0.0
        usd = self._charge(upstream.usage_cost(endpoint, data.get("usage")))
        self.metrics.calls.labels(kind=kind, outcome="ok").inc()
        return _text(data), usd


def _text(data: dict[str, Any]) -> str | None:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _policy_weights(policy: str | None) -> Weights:
    """The weights of a route's policy name (``balanced``, ``weights(0.7,0.3)``, ...)."""
    name = (policy or "balanced").split(",")[0]
    if name in SCENARIOS:
        return SCENARIOS[name]
    if (found := _WEIGHTS.fullmatch(name)) is not None:
        return Weights(float(found[1]), float(found[2]))
    return SCENARIOS["balanced"]


def labeller_for(settings, loop, endpoints, complete: Complete, proxy_settings, metrics):
    """The proxy's labeller: pool models through the proxy's guarded ``complete``, a judge
    outside the pool through LiteLLM; counted into the proxy's metrics registry."""
    timeout = proxy_settings.upstream_timeout_s

    async def call(endpoint: ModelEndpoint, messages: list[dict], params: dict) -> dict:
        if endpoint.name in endpoints:
            return await complete(endpoint, messages, params)
        return await upstream.complete(endpoint, messages, params, timeout)

    return BackgroundLabeller(settings, loop, endpoints, call, metrics.registry)
