"""The synthetic half of the local-pool benchmark: gradable taxonomy-guided questions.

The generator (the offline pool's largest model) writes questions for 36 difficulty leaves
(12 subcategories) of the packaged taxonomy (mathematics, programming, science, commonsense
and world knowledge), each in a mechanically gradable format
(:mod:`trouter.synthesis.graded`), so no judge model is involved. Every pool model answers
every question; the answer is graded against the generator's reference. Generation grows
in rounds (``per_leaf`` 4, 8, ... up to the target) and each round is answered before the
next, so a partial run is a usable, balanced benchmark and a rerun continues where the last
one stopped.

Two generator-quality filters (Niu et al., "Routing with Generated Data", 2026) are flags
on each exported row, so a router can be trained with or without them:

- ``self_consistent``: the generator, answering its own question as a pool model (same
  prompt as the other models, temperature 0), agrees with its reference. The generator is
  a pool member, so this costs no extra call -- and it makes the generator look perfect on
  the filtered rows, which docs/local-pool.md reports;
- ``discriminative``: the pool's scores on the question are not all equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trouter.data.label_filters import row_flags
from trouter.evaluation.real_questions import RealQuestion

#: (domain, subcategory) of the packaged taxonomy; all three difficulty leaves of each.
#: The first eight (24 leaves) made the release's first two rounds; the four after them were
#: added later because the filters keep under half of what is generated, and a small
#: generator's near-duplicates cap a narrow leaf at about 8-12 questions. They are all
#: four-option ``choice`` leaves; geometry and probability were left out because their
#: decimal answers would be graded by exact match.
SUBCATEGORIES = (
    ("Mathematics", "Arithmetic Word Problems"),
    ("Mathematics", "Algebra"),
    ("Mathematics", "Number Theory"),
    ("Programming", "Python Function Implementation"),
    ("Programming", "Algorithms and Data Structures"),
    ("Science", "Grade-School Science"),
    ("Commonsense Reasoning", "Everyday Situations"),
    ("World Knowledge", "Trivia and Quiz Questions"),
    ("Science", "Physics and Astronomy"),
    ("Science", "Chemistry"),
    ("Science", "Biology and Life Sciences"),
    ("Commonsense Reasoning", "Physical and Causal Reasoning"),
)
PER_LEAF = 16
ROUND_STEP = 4
PER_CALL = 4
#: a leaf is given up for the round after this many generation calls in a row keep nothing
#: (near-duplicates, or code whose reference fails its own tests): on 2 cores a code call
#: takes about 4-5 minutes, and saturated leaves used to spend their whole budget this way
STALL_CALLS = 2


def release_leaf_ids(taxonomy: Any, formats: Sequence[str] | None = None) -> list[str]:
    """The leaf ids of :data:`SUBCATEGORIES` in ``taxonomy`` (KeyError names a missing one),
    optionally only those whose answer format is in ``formats`` (ValueError for an unknown
    format)."""
    from trouter.synthesis.graded import FORMAT_BY_DOMAIN, answer_format

    wanted = {f"{d} > {s}" for d, s in SUBCATEGORIES}
    chosen = [leaf for leaf in taxonomy.leaves() if f"{leaf.domain} > {leaf.subcategory}" in wanted]
    found = {f"{leaf.domain} > {leaf.subcategory}" for leaf in chosen}
    missing = sorted(wanted - found)
    if missing:
        raise KeyError(f"taxonomy {taxonomy.name!r} has no subcategory {missing[0]!r}")
    if formats is not None:
        known = set(FORMAT_BY_DOMAIN.values())
        unknown = sorted(set(formats) - known)
        if unknown:
            raise ValueError(f"unknown answer format {unknown[0]!r}; choose from {sorted(known)}")
        chosen = [leaf for leaf in chosen if answer_format(leaf) in formats]
    return [leaf.id for leaf in chosen]


def as_question(row: dict[str, Any]) -> RealQuestion:
    """A gradable QA row as the question object the answering loop and graders take."""
    from trouter.synthesis.graded import pool_prompt

    return RealQuestion(
        id=row["id"],
        benchmark="synthetic",
        prompt=pool_prompt(row),
        reference=row["reference"],
        extra={**row["extra"], "format": row["format"], "leaf_id": row["leaf_id"]},
    )


def synthetic_rows(
    qa_rows: Sequence[dict[str, Any]],
    answers: Sequence[dict[str, Any]],
    models: Sequence[str],
    generator: str,
) -> list[dict[str, Any]]:
    """Labelled rows (leaf, generator, format, filter flags) for fully answered questions."""
    from trouter.local.benchmark import labelled_rows

    questions = [as_question(row) for row in qa_rows]
    by_id = {row["id"]: row for row in qa_rows}
    rows = labelled_rows(questions, answers, models)
    for row in rows:
        source = by_id[row["id"]]
        row.update(  # "question" stays the prompt the pool saw, as for real rows
            leaf_id=source["leaf_id"],
            generator=source.get("generator", generator),
            benchmark="synthetic",
            format=source["format"],
            **row_flags(row, generator),
        )
    return rows


async def build_synthetic(
    client: Any,
    pool: Any,
    generator: str,
    taxonomy: Any,
    out_dir: str | Path,
    per_leaf: int = PER_LEAF,
    in_flight: int = 1,
    announce: Callable[[str], None] = print,
    progress: Any = None,
    leaf_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Generate, answer and grade in rounds up to ``per_leaf`` per leaf; write the release.

    ``leaf_ids`` defaults to :func:`release_leaf_ids`."""
    from trouter.local.benchmark import write_labelled
    from trouter.local.real_answers import answer_real_questions
    from trouter.synthesis.graded import graded_spec
    from trouter.synthesis.qa import asynthesize_qa, read_qa_rows

    out = Path(out_dir)
    leaf_ids = list(leaf_ids or release_leaf_ids(taxonomy))
    endpoint = pool.get(generator)
    rows: list[dict[str, Any]] = []
    for target in range(min(ROUND_STEP, per_leaf), per_leaf + 1, ROUND_STEP):
        announce(f"synthetic round: up to {target} questions per leaf, {len(leaf_ids)} leaves")
        await asynthesize_qa(
            client,
            endpoint,
            taxonomy,
            out_path=out / "synthetic_qa.jsonl",
            per_leaf=target,
            per_call=PER_CALL,
            leaf_ids=leaf_ids,
            max_calls_per_leaf=2 * target // PER_CALL + 2,
            stall_calls=STALL_CALLS,
            concurrency=1,
            spec_for=graded_spec,
            progress=progress,
        )
        qa_rows = [r for r in read_qa_rows(out / "synthetic_qa.jsonl")[0] if "format" in r]
        answers = await answer_real_questions(
            client, pool, [as_question(r) for r in qa_rows], out / "synthetic_answers.jsonl",
            in_flight=in_flight,
        )  # fmt: skip
        rows = synthetic_rows(qa_rows, answers, pool.names, generator)
        write_labelled(rows, out / "synthetic.jsonl")
    return {"questions": len(rows), "leaves": len(leaf_ids)}


def export_synthetic(out_dir: str | Path, generator: str, models: Sequence[str]) -> int:
    """Rewrite ``synthetic.jsonl`` from the rows recorded so far (no model is called)."""
    from trouter.local.benchmark import write_labelled
    from trouter.local.real_answers import latest_rows, read_answer_rows
    from trouter.synthesis.qa import read_qa_rows

    out = Path(out_dir)
    qa_path = out / "synthetic_qa.jsonl"
    qa_rows = [r for r in read_qa_rows(qa_path, repair=False)[0] if "format" in r]
    answers = list(latest_rows(read_answer_rows(out / "synthetic_answers.jsonl")).values())
    rows = synthetic_rows(qa_rows, answers, models, generator)
    write_labelled(rows, out / "synthetic.jsonl")
    return len(rows)
