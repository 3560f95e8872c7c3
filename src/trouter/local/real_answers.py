"""Real benchmark questions answered by a pool, graded programmatically, as a RoutingDataset.

This is the test side of the local cold-start experiment: every pool model answers every
real GSM8K / HumanEval question through the one :class:`~trouter.llm.LLMClient` (so a rerun
is answered from the sqlite cache), the answer is graded without a judge (final number;
HumanEval's own tests in a sandboxed subprocess), and the cost is tokens x the pool's
prices. Rows are appended to a JSONL file one by one and read back on resume, so a killed
run loses at most the answer in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.jsonl import JsonlAppender, complete_objects
from trouter.data.output_lock import exclusive_output
from trouter.evaluation.real_questions import RealQuestion, grade, load_gsm8k, load_humaneval

#: Output-token caps: enough for a short chain of thought or one function, and no more
#: (every token is CPU time on a local model).
MAX_TOKENS = {"gsm8k": 320, "humaneval": 384, "number": 320, "code": 384, "choice": 128}


def max_tokens(question: RealQuestion) -> int:
    """The answer-token cap for a question: by answer format, else by benchmark."""
    return MAX_TOKENS[question.extra.get("format") or question.benchmark]


def load_real_questions(n_gsm8k: int, n_humaneval: int) -> list[RealQuestion]:
    """The first ``n`` questions of each benchmark (file order, so small runs are prefixes)."""
    return load_gsm8k(limit=n_gsm8k) + load_humaneval(limit=n_humaneval)


def read_answer_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The answer rows recorded so far. A half-written last line (a killed run) is skipped,
    so that answer is asked again; a damaged line elsewhere is a MalformedDataError naming
    file:line rather than a silently dropped answer."""
    return [row for _where, _number, row in complete_objects(path, repair)[0]]


def latest_rows(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last recorded row per (question, model): a retried call supersedes its failure."""
    return {(row["id"], row["model"]): row for row in rows}


def _read_done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Answered (question, model) pairs; a failed call (server down, timeout) is asked
    again on the next run rather than kept as a masked cell forever. The caller holds the
    file's lock, so a torn last line is cut off here: the next row must start a new line."""
    latest = latest_rows(read_answer_rows(path, repair=True))
    return {key: row for key, row in latest.items() if not row.get("error")}


async def answer_real_questions(
    client: Any,
    pool: Any,
    questions: Sequence[RealQuestion],
    out_path: str | Path,
    on_answer: Callable[[], None] | None = None,
    in_flight: int = 1,
) -> list[dict[str, Any]]:
    """Every pool model answers every question; one graded JSONL row per (question, model).

    Up to ``in_flight`` calls run at once (each pool model is its own server, so two calls
    to different models use two cores). Rows are written in completion order; the returned
    list follows question order. Failed calls are recorded with ``performance: null``
    (masked, never scored 0).
    """
    out_path = Path(out_path)
    with exclusive_output(out_path):  # a second run on the same file stops at once
        done = _read_done(out_path)
        todo = [(q, e) for q in questions for e in pool.models if (q.id, e.name) not in done]
        # a call still failing this time is recorded again; ``done`` then holds that failure
        for _ in range(len(questions) * len(pool.models) - len(todo)):
            if on_answer:
                on_answer()
        gate = asyncio.Semaphore(max(1, in_flight))
        # one write per row (no torn or interleaved lines; a full disk undoes the partial row)
        with JsonlAppender(out_path) as out:

            async def answer(question: RealQuestion, endpoint: Any) -> None:
                async with gate:
                    row = await _answer_one(client, question, endpoint)
                out.write(row)
                done[(question.id, endpoint.name)] = row
                if on_answer:
                    on_answer()

            await asyncio.gather(*(answer(q, e) for q, e in todo))
    return [done[(q.id, e.name)] for q in questions for e in pool.models]


async def _answer_one(client: Any, question: RealQuestion, endpoint: Any) -> dict[str, Any]:
    from trouter.llm import LLMError

    row: dict[str, Any] = {"id": question.id, "model": endpoint.name,
                           "benchmark": question.benchmark}  # fmt: skip
    try:
        completion = await client.acomplete(
            endpoint,
            [{"role": "user", "content": question.prompt}],
            temperature=0.0,
            max_tokens=max_tokens(question),
        )
    except LLMError as err:
        row.update(performance=None, cost_usd=None, error=str(err))
        return row
    score = await asyncio.to_thread(grade, question, completion.text)
    row.update(
        answer=completion.text,
        performance=score,
        cost_usd=endpoint.cost(completion.input_tokens, completion.output_tokens),
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        latency_s=completion.latency_s,
        cached=completion.cached,
        error=None,
    )
    return row


def half_splits(questions: Sequence[RealQuestion], seed: int = 0) -> np.ndarray:
    """``train`` / ``test`` per question: a fixed-seed half of each benchmark each."""
    splits = np.empty(len(questions), dtype=object)
    benchmarks = np.asarray([q.benchmark for q in questions], dtype=object)
    rng = np.random.default_rng(seed)
    for benchmark in dict.fromkeys(benchmarks):
        rows = np.flatnonzero(benchmarks == benchmark)
        order = rng.permutation(rows)
        cut = len(rows) // 2
        splits[order[:cut]] = "train"
        splits[order[cut:]] = "test"
    return splits


def real_dataset(
    questions: Sequence[RealQuestion], rows: Sequence[dict[str, Any]], pool: Any, seed: int = 0
) -> RoutingDataset:
    """The graded answers as a RoutingDataset (benchmarks gsm8k / humaneval, half splits)."""
    names = pool.names
    index = {q.id: i for i, q in enumerate(questions)}
    performance = np.full((len(questions), len(names)), np.nan)
    cost = np.full((len(questions), len(names)), np.nan)
    for row in rows:
        if row["id"] not in index or row["model"] not in names:
            continue
        i, j = index[row["id"]], names.index(row["model"])
        if row.get("performance") is not None and row.get("cost_usd") is not None:
            performance[i, j] = float(row["performance"])
            cost[i, j] = float(row["cost_usd"])
    benchmarks = np.asarray([q.benchmark for q in questions], dtype=object)
    return RoutingDataset(
        name="local-real",
        query_ids=np.asarray([q.id for q in questions], dtype=object),
        texts=[q.prompt for q in questions],
        tasks=benchmarks,
        benchmarks=benchmarks,
        models=[
            ModelInfo(m.name, m.input_price_per_mtok, m.output_price_per_mtok) for m in pool.models
        ],
        performance=performance,
        cost=cost,
        splits=half_splits(questions, seed),
        cost_source="tokens x local stand-in prices",
    )
