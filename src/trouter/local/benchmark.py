"""The local-pool routing benchmark (``results/local-pool/``), made by trouter's own pipeline.

A routing benchmark needs every pool model's graded answer to every question. With the
offline pool (three GGUF models on llama.cpp) this module builds two labelled-JSONL files:

- ``real.jsonl``: real GSM8K-test, HumanEval, MMLU and OpenBookQA questions, answered by the
  pool and graded programmatically (final number; the problem's own unit tests; the option
  letter), the cold-start *test* set;
- ``synthetic.jsonl``: taxonomy-guided synthetic questions (see :mod:`trouter.local.synthetic`),
  the cold-start *training* set.

Raw answers are appended to ``*_answers.jsonl`` one row per (question, model) as they
complete, so a killed run, or the next one, resumes where it stopped; the labelled
files are rewritten from them with the questions every model has answered.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

from trouter.evaluation.real_questions import (
    CHOICE_SETS,
    RealQuestion,
    load_choice_set,
    load_gsm8k,
    load_humaneval,
)

#: The release's size: every HumanEval problem and enough GSM8K test questions for 400, then
#: this many questions of each four-option set in ``CHOICE_SETS``: the release's real side
#: then covers the synthetic choice leaves' domains too.
REAL_GSM8K = 236
REAL_HUMANEVAL = 164
REAL_CHOICE = 100
#: Fields of a raw answer row kept in a labelled row's ``results[model]``.
RESULT_FIELDS = ("answer", "performance", "cost_usd", "input_tokens", "output_tokens",
                 "latency_s", "error")  # fmt: skip


def interleaved_real_questions(
    n_gsm8k: int, n_humaneval: int, n_choice: int = 0
) -> list[RealQuestion]:
    """GSM8K and HumanEval questions alternated, so any prefix of a run holds both; then the
    choice sets' ``n_choice`` questions each, alternated likewise (appended after, so the
    first 400 questions, their answers and their train/test halves stay as they were)."""
    pairs = zip_longest(load_gsm8k(limit=n_gsm8k), load_humaneval(limit=n_humaneval))
    choice = [load_choice_set(task, limit=n_choice) for task in CHOICE_SETS] if n_choice else []
    rounds = [*pairs, *zip_longest(*choice)]
    return [q for group in rounds for q in group if q is not None]


def labelled_rows(
    questions: Sequence[RealQuestion], answers: Sequence[dict[str, Any]], models: Sequence[str]
) -> list[dict[str, Any]]:
    """One labelled row per question that every model in ``models`` has answered.

    Real rows have no taxonomy leaf (``leaf_id`` is empty: unknown) and name their source
    benchmark, which is also the cost-normalisation group.
    """
    by_question: dict[str, dict[str, dict[str, Any]]] = {}
    for row in answers:
        by_question.setdefault(row["id"], {})[row["model"]] = row
    rows = []
    for question in questions:
        got = by_question.get(question.id, {})
        if any(model not in got for model in models):
            continue
        rows.append(
            {
                "id": question.id,
                "question": question.prompt,
                "reference": question.reference,
                "leaf_id": "",
                "generator": "",
                "benchmark": question.benchmark,
                "results": {
                    model: {key: got[model].get(key) for key in RESULT_FIELDS} for model in models
                },
            }
        )
    return rows


def write_labelled(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write labelled rows atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


async def build_real(
    client: Any,
    pool: Any,
    out_dir: str | Path,
    questions: Sequence[RealQuestion],
    in_flight: int = 1,
    on_answer: Any = None,
) -> dict[str, Any]:
    """Answer and grade ``questions`` (from :func:`interleaved_real_questions`; resumable);
    write ``real.jsonl``; return counts."""
    from trouter.local.real_answers import answer_real_questions

    out = Path(out_dir)
    answers = await answer_real_questions(
        client, pool, questions, out / "real_answers.jsonl", on_answer, in_flight=in_flight
    )
    rows = labelled_rows(questions, answers, pool.names)
    write_labelled(rows, out / "real.jsonl")
    return {"questions": len(questions), "complete_rows": len(rows)}


def export_real(out_dir: str | Path, n_gsm8k: int = REAL_GSM8K, n_humaneval: int = REAL_HUMANEVAL,
                n_choice: int = REAL_CHOICE) -> dict[str, Any]:  # fmt: skip
    """Rewrite ``real.jsonl`` from the answers recorded so far, without calling any model."""
    from trouter.local.real_answers import latest_rows, read_answer_rows

    out = Path(out_dir)
    questions = interleaved_real_questions(n_gsm8k, n_humaneval, n_choice)
    answers = list(latest_rows(read_answer_rows(out / "real_answers.jsonl")).values())
    models = list(dict.fromkeys(row["model"] for row in answers))
    rows = labelled_rows(questions, answers, models) if models else []  # nothing answered yet
    write_labelled(rows, out / "real.jsonl")
    return {"questions": len(questions), "complete_rows": len(rows), "models": models}
