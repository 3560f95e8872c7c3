"""The labelling run: every pool model answers every question, a judge scores each answer.

This is the most expensive step of cold start (questions x models x 2 calls), so it is built
to be interrupted:

- A question's line is appended and flushed only when all its models are answered and
  judged, so the output never holds half a question. On restart, ids already in the output
  are skipped; a torn last line (the process was killed mid-write) is cut off first.
- Every call goes through the LLM cache, so the finished calls of an abandoned question are
  free when it is redone.
- A cost ceiling is checked *before* each call against spent + reserved (in-flight calls'
  estimates) + this call's estimate; when it would be exceeded the run stops starting new
  work, abandons the questions it cannot finish (their done calls stay cached), writes every
  finished question, and reports ``stopped_by_budget``. Calls already in flight can
  overshoot only by their actual-minus-estimated cost.

A failed call or an unreadable verdict masks the cell (performance null, error recorded);
it is never a score of 0. A question on which *every* call failed carries no information and
is not written (a rerun retries it); after several such questions in a row the run stops
(an outage or a wrong endpoint, reported as ``aborted``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trouter.config import MalformedDataError
from trouter.data.jsonl import iter_json_objects
from trouter.data.labelled import check_row
from trouter.labelling.judge import (
    JUDGE_RESPONSE_FORMAT,
    VerdictError,
    answer_messages,
    judge_messages,
    parse_verdict,
)
from trouter.llm.client import (
    Completion,
    LLMClient,
    LLMError,
    count_prompt_tokens,
    supports_response_schema,
)
from trouter.llm.pool import ModelEndpoint

QUESTION_FIELDS = ("id", "question", "reference", "leaf_id", "generator")
#: Consecutive questions on which every call failed before a run gives up (an outage or a
#: wrong endpoint, not a flaky model).
FAILED_QUESTIONS_TO_ABORT = 5


@dataclass
class LabelSettings:
    """Knobs of a labelling run (the CLI's options)."""

    max_cost_usd: float | None = None
    answer_max_tokens: int | None = 1024
    judge_max_tokens: int = 64
    #: Assumed answer length for the dry run, and for the cost ceiling's projection until a
    #: model has answered (then its mean answer length is used).
    assumed_answer_tokens: int = 300
    #: Questions worked on at once; the client's own limit caps concurrent calls.
    questions_in_flight: int = 8


@dataclass
class LabelReport:
    """What a run did; ``written`` counts lines appended by this run."""

    total: int = 0
    already_done: int = 0
    written: int = 0
    abandoned: int = 0
    #: Questions not written because every call for them failed (retried by a rerun).
    failed: int = 0
    aborted: str | None = None
    masked_cells: int = 0
    calls: int = 0
    cached_calls: int = 0
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    stopped_by_budget: bool = False
    repaired_tail: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    """A dry run's forecast: calls still to make and their cost."""

    questions: int
    calls: int
    cached_calls: int
    cost_usd: float
    unpriced_models: list[str]
    input_tokens: int
    output_tokens: int


class BudgetStop(Exception):
    """Raised inside a question when its next call would break the cost ceiling."""


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """Questions from a QA JSONL file (``trouter synth qa``), checked; errors name file:line."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for where, number, row in iter_json_objects(path):
        for key in QUESTION_FIELDS:
            if not isinstance(row.get(key), str):
                raise MalformedDataError(f"{where}: field {key!r} must be a string")
        if row["id"] in seen:
            raise MalformedDataError(f"{where}: id {row['id']!r} repeats line {seen[row['id']]}")
        seen[row["id"]] = number
        rows.append({key: row[key] for key in QUESTION_FIELDS})
    return rows


def done_ids(path: str | Path, repair: bool = True) -> tuple[set[str], bool]:
    """Ids already labelled in ``path``, after cutting off a torn last line (if ``repair``).

    Returns (ids, torn). A damaged line anywhere but the end is an error: it is not a
    crash artefact, and skipping it would lose or duplicate a question.
    """
    path = Path(path)
    if not path.exists():
        return set(), False
    data = path.read_bytes()
    repaired = False
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        if repair:
            with path.open("r+b") as handle:
                handle.truncate(keep)
        data, repaired = data[:keep], True
    ids: set[str] = set()
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = check_row(json.loads(line), where)
        except json.JSONDecodeError as err:
            raise MalformedDataError(f"{where}: not valid JSON ({err.msg})") from None
        if row["id"] in ids:
            raise MalformedDataError(f"{where}: id {row['id']!r} is written twice")
        ids.add(row["id"])
    return ids, repaired


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
        self.reserved = 0.0
        self.stopping = False
        self.failed_in_a_row = 0
        self.output_tokens: dict[str, tuple[int, int]] = {}  # name -> (sum, calls)

    def _estimate(self, endpoint: ModelEndpoint, messages: list[dict[str, Any]], cap: int) -> float:
        """Projected cost of a call: counted prompt tokens, and output tokens as the mean
        this endpoint has produced so far (the assumed length until it has answered)."""
        if self.settings.max_cost_usd is None or not endpoint.priced:
            return 0.0
        seen = self.output_tokens.get(endpoint.name)
        out = seen[0] / seen[1] if seen else self.settings.assumed_answer_tokens
        tokens = count_prompt_tokens(endpoint, messages)
        return endpoint.cost(tokens, int(math.ceil(min(out, cap)))) or 0.0

    async def call(
        self, endpoint: ModelEndpoint, messages: list[dict[str, Any]], **params: Any
    ) -> Completion:
        """One call under the cost ceiling; raises BudgetStop instead of overspending."""
        if self.stopping:
            raise BudgetStop
        hit = self.client.peek(endpoint, messages, **params)
        estimate = 0.0
        if hit is None:
            cap = params.get("max_tokens") or self.settings.assumed_answer_tokens
            estimate = self._estimate(endpoint, messages, cap)
            limit = self.settings.max_cost_usd
            if limit is not None and self.report.spent_usd + self.reserved + estimate > limit:
                self.stopping = True
                self.report.stopped_by_budget = True
                raise BudgetStop
        self.reserved += estimate
        try:
            completion = await self.client.acomplete(endpoint, messages, **params)
        finally:
            self.reserved -= estimate
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

    async def one_cell(
        self, endpoint: ModelEndpoint, q: dict[str, Any]
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
                endpoint,
                answer_messages(q["question"]),
                temperature=0.0,
                max_tokens=self.settings.answer_max_tokens,
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
            verdict = await self.call(
                self.judge,
                judge_messages(q["question"], q["reference"], answer.text),
                temperature=0.0,
                max_tokens=self.settings.judge_max_tokens,
                response_format=self.judge_format,
            )
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
        outcomes = await asyncio.gather(
            *(self.one_cell(m, q) for m in self.models), return_exceptions=True
        )
        cells: dict[str, dict[str, Any]] = {}
        all_failed = True
        for model, outcome in zip(self.models, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            cells[model.name], failed = outcome
            all_failed = all_failed and failed
        return {**q, "results": cells}, all_failed


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
    """
    settings = settings or LabelSettings()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done, repaired = done_ids(out_path)
    report = LabelReport(total=len(questions), repaired_tail=repaired)
    if repaired:
        report.notes.append(f"cut a torn last line off {out_path} (an interrupted write)")
    todo = [q for q in questions if q["id"] not in done]
    report.already_done = len(questions) - len(todo)
    labeller = _Labeller(client, models, judge, settings, report, on_update)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for q in todo:
        queue.put_nowait(q)

    with out_path.open("a", encoding="utf-8") as handle:

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
                report.masked_cells += sum(
                    r["performance"] is None for r in row["results"].values()
                )
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                report.written += 1
                if on_update is not None:
                    on_update(report)

        workers = max(1, settings.questions_in_flight)
        await asyncio.gather(*(worker() for _ in range(workers)))
        os.fsync(handle.fileno())
    report.abandoned += queue.qsize()
    return report


def estimate(
    client: LLMClient,
    models: list[ModelEndpoint],
    judge: ModelEndpoint,
    questions: list[dict[str, Any]],
    settings: LabelSettings | None = None,
) -> Estimate:
    """Calls and cost a run would make, without calling anything.

    Prompt tokens come from ``litellm.token_counter``; answers are assumed
    ``assumed_answer_tokens`` long (capped by ``answer_max_tokens``) and verdicts 8 tokens.
    Calls already in the cache are counted apart and cost nothing.
    """
    settings = settings or LabelSettings()
    judge_format = JUDGE_RESPONSE_FORMAT if supports_response_schema(judge) else None
    assumed = settings.assumed_answer_tokens
    if settings.answer_max_tokens is not None:
        assumed = min(assumed, settings.answer_max_tokens)
    result = Estimate(len(questions), 0, 0, 0.0, [], 0, 0)
    unpriced: set[str] = set()
    for q in questions:
        for endpoint in models:
            messages = answer_messages(q["question"])
            hit = client.peek(
                endpoint, messages, temperature=0.0, max_tokens=settings.answer_max_tokens
            )
            answer_text = hit.text if hit is not None else ""
            if hit is not None:
                result.cached_calls += 1
            else:
                tin = count_prompt_tokens(endpoint, messages)
                _add(result, endpoint, tin, assumed, unpriced)
            judging = judge_messages(q["question"], q["reference"], answer_text)
            verdict = None
            if hit is not None:
                verdict = client.peek(
                    judge,
                    judging,
                    temperature=0.0,
                    max_tokens=settings.judge_max_tokens,
                    response_format=judge_format,
                )
            if verdict is not None:
                result.cached_calls += 1
                continue
            tin = count_prompt_tokens(judge, judging)
            _add(result, judge, tin + (0 if hit is not None else assumed), 8, unpriced)
    result.unpriced_models = sorted(unpriced)
    return result


def _add(result: Estimate, endpoint: ModelEndpoint, tin: int, tout: int, unpriced: set) -> None:
    result.calls += 1
    result.input_tokens += tin
    result.output_tokens += tout
    cost = endpoint.cost(tin, tout)
    if cost is None:
        unpriced.add(endpoint.name)
    else:
        result.cost_usd += cost
