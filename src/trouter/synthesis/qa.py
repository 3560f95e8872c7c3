"""Synthetic question-answer pairs per taxonomy leaf, deduplicated, written resumably.

For every difficulty leaf the generator is asked for ``per_call`` pairs at a time until
``per_leaf`` are kept. A new question is rejected when its MiniLM cosine similarity to a
question already kept for the same leaf exceeds ``dedup_threshold`` (0.9 in the method):
generators repeat themselves, and near-duplicates would overweight one query in training.
Rows are appended and flushed one by one; a rerun reads the file back, counts what each
leaf already has, reloads those questions for deduplication and continues. A leaf that does
not reach its target within ``max_calls_per_leaf`` calls is given up and reported; so is one
whose last ``stall_calls`` calls in a row added nothing (a saturated leaf, where a slow local
generator would otherwise spend minutes per call on near-duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trouter.config import MalformedDataError
from trouter.data.jsonl import JsonlAppender, complete_objects
from trouter.data.output_lock import exclusive_output
from trouter.encoders import get_encoder
from trouter.synthesis.budget import CallCounter, CostMeter, Progress, SilentProgress
from trouter.synthesis.llmjson import MalformedOutputError, ask_json
from trouter.synthesis.prompts import PLAIN_SPEC, RequestSpec
from trouter.taxonomy.model import Leaf, Taxonomy


class QAFileError(ValueError):
    """The existing QA file cannot be resumed (a damaged row in the middle)."""


@dataclass
class LeafReport:
    """What happened for one leaf in this run (``kept`` includes rows from earlier runs)."""

    leaf_id: str
    kept: int = 0
    added: int = 0
    calls: int = 0
    duplicates: int = 0
    malformed_calls: int = 0
    gave_up: bool = False


@dataclass
class QAReport:
    out_path: Path
    leaves: list[LeafReport] = field(default_factory=list)
    #: A torn last line (an interrupted write) was cut off before resuming.
    repaired_tail: bool = False

    @property
    def added(self) -> int:
        return sum(r.added for r in self.leaves)

    @property
    def given_up(self) -> list[LeafReport]:
        return [r for r in self.leaves if r.gave_up]


def default_max_calls(per_leaf: int, per_call: int) -> int:
    """Three times the calls a duplicate-free generator needs, plus two for slips."""
    return 3 * math.ceil(per_leaf / per_call) + 2


def row_id(leaf_id: str, question: str) -> str:
    """Stable id from leaf and question, so reruns and merges never collide or renumber."""
    return "syn-" + hashlib.sha256(f"{leaf_id}\x00{question}".encode()).hexdigest()[:12]


def read_qa_rows(path: Path, repair: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """(rows of a QA JSONL file, whether a torn last line was cut off).

    The torn line (a killed write) is cut off the file when ``repair``; a damaged row
    anywhere else, or a byte that is not UTF-8, is a QAFileError naming file:line.
    """
    try:
        objects, torn = complete_objects(path, repair)
    except MalformedDataError as err:
        raise QAFileError(str(err)) from None
    rows = []
    for where, _number, row in objects:
        if not all(isinstance(row.get(k), str) for k in ("id", "question", "leaf_id")):
            raise QAFileError(f"{where}: expected an object with id, question, leaf_id")
        rows.append(row)
    return rows, torn


def difficulty_scales(taxonomy: Taxonomy) -> dict[str, list[str]]:
    """Leaf id -> the difficulty names of its subcategory, in order."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for leaf in taxonomy.leaves():
        groups[(leaf.domain, leaf.subcategory)].append(leaf.difficulty)
    return {leaf.id: groups[(leaf.domain, leaf.subcategory)] for leaf in taxonomy.leaves()}


async def asynthesize_qa(
    client: Any,
    generator_endpoint: Any,
    taxonomy: Taxonomy,
    *,
    out_path: str | Path,
    per_leaf: int = 40,
    per_call: int = 8,
    dedup_threshold: float = 0.9,
    max_calls_per_leaf: int | None = None,
    stall_calls: int | None = None,
    leaf_ids: list[str] | None = None,
    temperature: float = 0.8,
    concurrency: int = 8,
    meter: CostMeter | None = None,
    progress: Progress | None = None,
    encoder: Any = None,
    spec_for: Callable[[Leaf], RequestSpec] | None = None,
) -> QAReport:
    """Async :func:`synthesize_qa`; leaves run concurrently, each leaf's calls in sequence
    (a leaf's next request lists the questions it already kept). Holds ``out_path``'s
    exclusive lock for the run (:class:`~trouter.data.output_lock.OutputLockedError`).
    ``spec_for(leaf)`` picks how a leaf's requests are written and read (default: free-text
    pairs); items carrying ``format`` / ``extra`` (gradable items,
    :mod:`trouter.synthesis.graded`) keep them. ``max_calls_per_leaf`` defaults to
    :func:`default_max_calls`; ``stall_calls`` (default: no limit) gives a leaf up after that
    many calls in a row that kept nothing; ``leaf_ids`` restricts the run to some leaves; ``meter``
    carries an optional cost ceiling; ``encoder`` defaults to the shared MiniLM encoder."""
    if per_leaf < 1 or per_call < 1:
        raise ValueError("per_leaf and per_call must be at least 1")
    out_path = Path(out_path)
    progress = progress or SilentProgress()
    leaves = _selected_leaves(taxonomy, leaf_ids)
    run = _QARun(
        client=client,
        endpoint=generator_endpoint,
        generator=getattr(generator_endpoint, "name", str(generator_endpoint)),
        encoder=encoder or get_encoder(),
        scales=difficulty_scales(taxonomy),
        spec_for=spec_for,
        per_leaf=per_leaf,
        per_call=per_call,
        max_calls=max_calls_per_leaf or default_max_calls(per_leaf, per_call),
        stall_calls=stall_calls,
        dedup_threshold=dedup_threshold,
        temperature=temperature,
        meter=meter or CostMeter(),
        progress=progress,
        slots=asyncio.Semaphore(concurrency),
    )
    with _locked_output(out_path, progress) as (existing, writer, torn):
        run.existing, run.writer = existing, writer
        progress.stage("leaves", len(leaves))
        reports = await asyncio.gather(
            *(_flag_failure(run.leaf(leaf), run.failed) for leaf in leaves)
        )
    return QAReport(out_path=out_path, leaves=list(reports), repaired_tail=torn)


def _selected_leaves(taxonomy: Taxonomy, leaf_ids: list[str] | None) -> list[Leaf]:
    """The taxonomy's leaves, or those of ``leaf_ids`` (an unknown id is a KeyError)."""
    leaves = taxonomy.leaves()
    if leaf_ids is None:
        return leaves
    known = {leaf.id for leaf in leaves}
    unknown = [i for i in leaf_ids if i not in known]
    if unknown:
        raise KeyError(f"taxonomy {taxonomy.name!r} has no leaf {unknown[0]!r}")
    return [leaf for leaf in leaves if leaf.id in set(leaf_ids)]


@dataclass
class _QARun:
    """One synthesis run: its settings, and the state its concurrent leaves share (the
    questions already in the file and its appender, bound under the file's lock)."""

    client: Any
    endpoint: Any
    generator: str
    encoder: Any
    scales: dict[str, list[str]]
    spec_for: Callable[[Leaf], RequestSpec] | None
    per_leaf: int
    per_call: int
    max_calls: int
    stall_calls: int | None
    dedup_threshold: float
    temperature: float
    meter: CostMeter
    progress: Progress
    slots: asyncio.Semaphore
    # Set when a leaf fails for good: the others then start no new call. A call started
    # after the failure would be cancelled when the run ends, and a LiteLLM call cancelled
    # before its request is sent leaves a never-awaited coroutine (a RuntimeWarning).
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    existing: dict[str, list[str]] = field(default_factory=dict)
    writer: Any = None

    async def leaf(self, leaf: Leaf) -> LeafReport:
        """Ask for questions until the leaf has ``per_leaf``, its calls run out, or it
        stalls; each kept question is appended to the file at once."""
        kept = list(self.existing.get(leaf.id, []))
        report = LeafReport(leaf.id, kept=len(kept))
        vectors = self.encoder.encode(kept) if kept else np.zeros((0, 0), dtype=np.float32)
        counter = CallCounter(self.meter)
        barren = 0  # calls in a row that kept nothing
        spec = self.spec_for(leaf) if self.spec_for else PLAIN_SPEC
        async with self.slots:
            while (len(kept) < self.per_leaf and counter.calls < self.max_calls
                   and not self.failed.is_set()):  # fmt: skip
                if self.stall_calls is not None and barren >= self.stall_calls:
                    break
                barren += 1
                before = counter.calls
                pairs = await self._ask(leaf, spec, kept, counter, report)
                if counter.calls == before:  # defensive: never loop without spending a call
                    break
                added, vectors = self._keep(leaf, pairs, kept, vectors, report)
                if added:
                    barren = 0
        self._finish(leaf, report, len(kept), counter)
        return report

    async def _ask(self, leaf, spec, kept, counter, report) -> list[dict[str, Any]]:
        """One generator call for ``leaf`` (an unusable reply counts, and yields nothing)."""
        batch = report.calls + 1
        try:
            pairs = await ask_json(
                self.client,
                self.endpoint,
                spec.messages(leaf, self.scales[leaf.id], self.per_call, batch, kept),
                parse=spec.parse,
                what=f"QA batch {batch} for leaf {leaf.id!r}",
                meter=counter,
                temperature=self.temperature,
                max_tokens=max(1024, 400 * self.per_call),
                schema=spec.schema,
                attempts=2,
            )
        except MalformedOutputError as err:
            report.malformed_calls += 1
            self.progress.note(str(err))
            pairs = []
        report.calls += 1
        return pairs

    def _keep(self, leaf, pairs, kept, vectors, report) -> tuple[bool, np.ndarray]:
        """Append the new pairs that are not near-duplicates of a kept question; whether
        any was kept, and the kept questions' vectors."""
        if not pairs:
            return False, vectors
        added = False
        candidates = self.encoder.encode([item["question"] for item in pairs])
        for item, vector in zip(pairs, candidates, strict=True):
            if len(kept) >= self.per_leaf:
                break
            if len(vectors) and float(np.max(vectors @ vector)) > self.dedup_threshold:
                report.duplicates += 1
                continue
            question = item["question"]
            self.writer.write(
                {
                    "id": row_id(leaf.id, question),
                    "question": question,
                    "reference": item["reference"],
                    "leaf_id": leaf.id,
                    "generator": self.generator,
                    **{k: item[k] for k in ("format", "extra") if k in item},
                }
            )
            kept.append(question)
            report.added += 1
            added = True
            vectors = vector[None, :] if not len(vectors) else np.vstack([vectors, vector])
        return added, vectors

    def _finish(self, leaf: Leaf, report: LeafReport, kept: int, counter: CallCounter) -> None:
        report.kept = kept
        if report.kept < self.per_leaf and not self.failed.is_set():
            report.gave_up = True
            self.progress.note(
                f"leaf {leaf.id!r}: gave up with {report.kept}/{self.per_leaf} questions after "
                f"{counter.calls} calls ({report.duplicates} near-duplicates rejected, "
                f"{report.malformed_calls} unusable replies)"
            )
        self.progress.advance("leaves")


async def _flag_failure(work: Awaitable[LeafReport], failed: asyncio.Event) -> LeafReport:
    try:
        return await work
    except Exception:
        failed.set()
        raise


@contextmanager
def _locked_output(
    out_path: Path, progress: Progress
) -> Iterator[tuple[dict[str, list[str]], JsonlAppender, bool]]:
    """Under the file's exclusive lock: (questions kept per leaf, the appender, torn tail)."""
    with exclusive_output(out_path):
        rows, torn = read_qa_rows(out_path)
        if torn:
            progress.note(f"cut a torn last line off {out_path} (left by an interrupted write)")
        existing: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            existing[row["leaf_id"]].append(row["question"])
        with JsonlAppender(out_path) as writer:
            yield existing, writer, torn


def synthesize_qa(
    client: Any, generator_endpoint: Any, taxonomy: Taxonomy, **options: Any
) -> QAReport:
    """Generate ``per_leaf`` deduplicated QA pairs for every leaf into ``out_path`` (JSONL).

    The blocking form of :func:`asynthesize_qa`, which documents the keyword ``options``
    (``out_path`` is required). Rows: ``{"id", "question", "reference", "leaf_id",
    "generator"}``. Rerunning on the same file resumes without duplicates.
    """
    return asyncio.run(asynthesize_qa(client, generator_endpoint, taxonomy, **options))
