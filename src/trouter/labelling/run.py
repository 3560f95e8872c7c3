"""The labelling run: every pool model answers every question, a judge scores each answer.

This is the most expensive step of cold start (questions x models x 2 calls), so it is built
to be interrupted:

- A question's line is appended and flushed only when all its models are answered and
  judged, so the output never holds half a question. On restart, ids already in the output
  are skipped; a torn last line (the process was killed mid-write) is cut off first.
- Every call goes through the LLM cache, so the finished calls of an abandoned question are
  free when it is redone.
- One run per output file: an exclusive lock (:mod:`trouter.data.output_lock`) makes a
  second run on the same file refuse at once, naming the first one's pid.
- A cost ceiling (:mod:`trouter.labelling.budget`) admits a question only when its expected
  cost fits, and a call only when its worst case fits; what does not fit waits for work in
  flight instead of stopping the run, so a run spends close to the ceiling and never past it.
- A write that fails (a full disk) leaves no torn line (:class:`JsonlAppender`) and ends the
  run with one clear error; a cache that cannot be written is only a warning.

Models that give a question the same answer share one verdict: the judge is called once
per distinct answer, and its cost is split among the cells that share it, so the costs in
the rows add up to what was paid. (Judging identical answers separately would make the
second call a cache hit whenever the first had finished -- a timing-dependent call count,
and a cost recorded in the row that this run never paid.)

A failed call or an unreadable verdict masks the cell (performance null, error recorded);
it is never a score of 0. A question on which *every* call failed carries no information and
is not written (a rerun retries it); after several such questions in a row the run stops
(an outage or a wrong endpoint, reported as ``aborted``).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from trouter.data.jsonl import JsonlAppender, OutputWriteError
from trouter.data.label_filters import (
    FilterError,
    check_generators,
    passes,
    rejected_path,
    row_flags,
)
from trouter.data.output_lock import exclusive_output
from trouter.labelling.budget import PROMPT_MARGIN, BudgetStop, CostCeiling, Ticket
from trouter.labelling.files import done_ids
from trouter.labelling.judge import (
    JUDGE_RESPONSE_FORMAT,
    VerdictError,
    answer_messages,
    judge_messages,
    parse_verdict,
)
from trouter.labelling.settings import LabelReport, LabelSettings
from trouter.llm.client import (
    Completion,
    LLMClient,
    LLMError,
    count_prompt_tokens,
    supports_response_schema,
)
from trouter.llm.pool import ModelEndpoint

#: Consecutive questions on which every call failed before a run gives up (an outage or a
#: wrong endpoint, not a flaky model).
FAILED_QUESTIONS_TO_ABORT = 5


class _Labeller:
    """One run's shared state: the client, the judge, the budget and the output file."""

    def __init__(
        self,
        client: LLMClient,
        models: list[ModelEndpoint],
        judge: ModelEndpoint,
        settings: LabelSettings,
        report: LabelReport,
        on_update: Callable[[LabelReport], None] | None,
    ) -> None:
        self.client, self.models, self.judge = client, models, judge
        self.settings, self.report, self.on_update = settings, report, on_update
        self.judge_format = JUDGE_RESPONSE_FORMAT if supports_response_schema(judge) else None
        self.ceiling = CostCeiling(settings.max_cost_usd)
        self.stopping = False
        self.failed_in_a_row = 0
        self.output_tokens: dict[str, tuple[int, int]] = {}  # name -> (sum, calls)

    # ----- the cost ceiling ----------------------------------------------------------------
    def _mean_output(self, endpoint: ModelEndpoint, cap: int | None) -> int:
        seen = self.output_tokens.get(endpoint.name)
        mean = seen[0] / seen[1] if seen else self.settings.assumed_answer_tokens
        return int(math.ceil(min(mean, cap) if cap else mean))

    def _cost(self, endpoint: ModelEndpoint, tokens_in: float, tokens_out: int) -> float:
        if not endpoint.priced:
            return 0.0  # unpriced models cannot be budgeted; the report counts their calls
        return endpoint.cost(int(math.ceil(tokens_in)), tokens_out) or 0.0

    def expected_cost(self, q: dict[str, Any]) -> float:
        """What labelling ``q`` should cost: answers of mean length, then their verdicts."""
        if self.settings.max_cost_usd is None:
            return 0.0
        answer_cap = self.settings.answer_max_tokens
        total = 0.0
        for endpoint in self.models:
            messages = answer_messages(q["question"])
            if self.client.peek(endpoint, messages, **self._answer_params()) is None:
                answer_out = self._mean_output(endpoint, answer_cap)
                total += self._cost(endpoint, count_prompt_tokens(endpoint, messages), answer_out)
            else:
                answer_out = 0
            judging = judge_messages(q["question"], q["reference"], "")
            tokens_in = count_prompt_tokens(self.judge, judging) + answer_out
            verdict_out = self._mean_output(self.judge, self.settings.judge_max_tokens)
            total += self._cost(self.judge, tokens_in, min(verdict_out, 16))
        return total

    def _worst_cost(
        self, endpoint: ModelEndpoint, messages: list[dict[str, Any]], cap: int | None
    ) -> float:
        """The most this call can cost: a margin on the prompt and every allowed token out."""
        if self.settings.max_cost_usd is None:
            return 0.0
        out = cap if cap else self._mean_output(endpoint, None)
        return self._cost(endpoint, PROMPT_MARGIN * count_prompt_tokens(endpoint, messages), out)

    def _answer_params(self) -> dict[str, Any]:
        return {"temperature": 0.0, "max_tokens": self.settings.answer_max_tokens}

    async def call(
        self,
        endpoint: ModelEndpoint,
        messages: list[dict[str, Any]],
        ticket: Ticket | None = None,
        **params: Any,
    ) -> Completion:
        """One call under the cost ceiling; raises BudgetStop instead of overspending."""
        if self.stopping:
            raise BudgetStop
        worst = 0.0
        if self.client.peek(endpoint, messages, **params) is None:
            worst = self._worst_cost(endpoint, messages, params.get("max_tokens"))
        try:
            await self.ceiling.start_call(worst)
        except BudgetStop:
            self.stopping = self.report.stopped_by_budget = True
            raise
        spent = 0.0
        try:
            completion = await self.client.acomplete(endpoint, messages, **params)
            spent = completion.cost_usd or 0.0
        finally:
            await self.ceiling.end_call(worst, spent, ticket)
        self.report.calls += 1
        self.report.cached_calls += int(completion.cached)
        total, count = self.output_tokens.get(endpoint.name, (0, 0))
        self.output_tokens[endpoint.name] = (total + completion.output_tokens, count + 1)
        if completion.cost_usd is None:
            self.report.unpriced_calls += 1
        else:
            self.report.spent_usd += completion.cost_usd
        if self.on_update is not None:
            self.on_update(self.report)
        return completion

    def _verdict(
        self,
        q: dict[str, Any],
        answer: str,
        ticket: Ticket,
        verdicts: dict[str, asyncio.Future[Completion]],
    ) -> asyncio.Future[Completion]:
        """The judge's call on ``answer``, made once per distinct answer of ``q``."""
        verdict = verdicts.get(answer)
        if verdict is None:
            verdict = verdicts[answer] = asyncio.ensure_future(
                self.call(
                    self.judge,
                    judge_messages(q["question"], q["reference"], answer),
                    ticket,
                    temperature=0.0,
                    max_tokens=self.settings.judge_max_tokens,
                    response_format=self.judge_format,
                )
            )
        return verdict

    async def one_cell(
        self,
        endpoint: ModelEndpoint,
        q: dict[str, Any],
        ticket: Ticket,
        verdicts: dict[str, asyncio.Future[Completion]],
    ) -> tuple[dict[str, Any], bool]:
        """(cell, call failed) for one (question, model); failures become masked cells."""
        cell: dict[str, Any] = {
            "answer": None,
            "performance": None,
            "cost_usd": None,
            "input_tokens": None,
            "output_tokens": None,
            "latency_s": None,
            "error": None,
        }
        try:
            answer = await self.call(
                endpoint, answer_messages(q["question"]), ticket, **self._answer_params()
            )
        except LLMError as err:
            cell["error"] = f"answer: {err}"
            return cell, True
        cell.update(
            answer=answer.text,
            cost_usd=answer.original_cost_usd,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            latency_s=answer.original_latency_s,
        )
        try:
            verdict = await self._verdict(q, answer.text, ticket, verdicts)
        except LLMError as err:
            cell["error"] = f"judge: {err}"
            return cell, True
        cell["judge_cost_usd"] = verdict.original_cost_usd
        try:
            cell["performance"] = parse_verdict(verdict.text)
        except VerdictError as err:
            cell["error"] = f"judge: {err}"
        return cell, False

    async def one_question(self, q: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(row, every call failed); BudgetStop once the calls in flight have finished."""
        if self.stopping:
            raise BudgetStop
        try:
            ticket = await self.ceiling.admit(self.expected_cost(q))
        except BudgetStop:
            self.stopping = self.report.stopped_by_budget = True
            raise
        verdicts: dict[str, asyncio.Future[Completion]] = {}
        try:
            outcomes = await asyncio.gather(
                *(self.one_cell(m, q, ticket, verdicts) for m in self.models),
                return_exceptions=True,
            )
        finally:
            await self.ceiling.release(ticket)
        cells: dict[str, dict[str, Any]] = {}
        all_failed = True
        for model, outcome in zip(self.models, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            cells[model.name], failed = outcome
            all_failed = all_failed and failed
        _split_shared_verdict_costs(cells)
        return {**q, "results": cells}, all_failed


def _split_shared_verdict_costs(cells: dict[str, dict[str, Any]]) -> None:
    """Each cell's ``judge_cost_usd`` becomes its share of the one verdict its answer got."""
    sharers = Counter(c["answer"] for c in cells.values() if "judge_cost_usd" in c)
    for cell in cells.values():
        if cell.get("judge_cost_usd") is not None:
            cell["judge_cost_usd"] /= sharers[cell["answer"]]


async def alabel(
    client: LLMClient,
    models: list[ModelEndpoint],
    judge: ModelEndpoint,
    questions: list[dict[str, Any]],
    out_path: str | Path,
    settings: LabelSettings | None = None,
    on_update: Callable[[LabelReport], None] | None = None,
) -> LabelReport:
    """Label ``questions`` into ``out_path`` (appending; resumes a previous run).

    ``on_update`` is called after every call and every written question (progress bars).
    Raises :class:`~trouter.data.output_lock.OutputLockedError` when another run holds
    ``out_path``, and :class:`~trouter.data.jsonl.OutputWriteError` when it cannot be written.
    """
    settings = settings or LabelSettings()
    out_path = Path(out_path)
    with exclusive_output(out_path):
        return await _label_locked(client, models, judge, questions, out_path, settings, on_update)


async def _label_locked(
    client: LLMClient,
    models: list[ModelEndpoint],
    judge: ModelEndpoint,
    questions: list[dict[str, Any]],
    out_path: Path,
    settings: LabelSettings,
    on_update: Callable[[LabelReport], None] | None,
) -> LabelReport:
    check_generators(questions, [m.name for m in models], settings.filters)
    done, repaired = done_ids(out_path)
    if settings.filters and rejected_path(out_path).exists():
        done |= done_ids(rejected_path(out_path))[0]
    report = LabelReport(total=len(questions), repaired_tail=repaired)
    if repaired:
        report.notes.append(
            f"cut a torn last line off {out_path} (left by an interrupted write); "
            "that question is labelled again"
        )
    todo = [q for q in questions if q["id"] not in done]
    report.already_done = len(questions) - len(todo)
    labeller = _Labeller(client, models, judge, settings, report, on_update)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for q in todo:
        queue.put_nowait(q)
    write_error: list[OutputWriteError] = []
    cache_failures = client.stats.cache_write_failures

    side = JsonlAppender(rejected_path(out_path)) if settings.filters else nullcontext()
    with JsonlAppender(out_path) as output, side as rejected:

        async def worker() -> None:
            while not labeller.stopping:
                try:
                    q = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    row, all_failed = await labeller.one_question(q)
                except BudgetStop:
                    report.abandoned += 1
                    continue
                if all_failed:
                    report.failed += 1
                    labeller.failed_in_a_row += 1
                    if labeller.failed_in_a_row >= FAILED_QUESTIONS_TO_ABORT:
                        first = next(iter(row["results"].values()))["error"]
                        report.aborted = (
                            f"every call failed for {labeller.failed_in_a_row} questions in a "
                            f"row; last error: {first}"
                        )
                        labeller.stopping = True
                    continue
                labeller.failed_in_a_row = 0
                row.update(row_flags(row))
                try:
                    keep = passes(row, settings.filters)
                except FilterError:  # the generator's own call failed: undecidable, set aside
                    keep = False
                try:
                    (output if keep else rejected).write(row)
                except OutputWriteError as err:
                    write_error.append(err)
                    labeller.stopping = True
                    report.abandoned += 1
                    return
                report.masked_cells += sum(
                    r["performance"] is None for r in row["results"].values()
                )
                report.written += 1
                report.rejected += not keep
                if on_update is not None:
                    on_update(report)

        workers = max(1, settings.questions_in_flight)
        await asyncio.gather(*(worker() for _ in range(workers)))
    report.abandoned += queue.qsize()
    lost = client.stats.cache_write_failures - cache_failures
    if lost:
        report.notes.append(
            f"{lost} answers could not be saved to the LLM cache (see the warning above); "
            "they are in the output, but an abandoned question would be paid for again"
        )
    if write_error:
        raise write_error[0]
    return report
