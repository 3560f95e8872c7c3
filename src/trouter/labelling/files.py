"""The files of a labelling run: the question file it reads and the labelled file it resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trouter.config import MalformedDataError
from trouter.data.jsonl import complete_objects, iter_json_objects
from trouter.data.labelled import check_row

QUESTION_FIELDS = ("id", "question", "reference", "leaf_id", "generator")


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
    crash artefact, and skipping it would lose or duplicate a question. Repairing needs the
    file's lock (``alabel`` holds it).
    """
    path = Path(path)
    rows, torn = complete_objects(path, repair)
    ids: set[str] = set()
    for where, _number, raw_row in rows:
        row = check_row(raw_row, where)
        if row["id"] in ids:
            raise MalformedDataError(f"{where}: id {row['id']!r} is written twice")
        ids.add(row["id"])
    return ids, torn
