"""JsonlAppender keeps writing to the file a reader sees when a long run's output is
replaced under it (``git stash`` / ``git checkout`` of a committed output write a new file
and rename it over the old one) or removed. Rows are real GSM8K test questions."""

from __future__ import annotations

import json
import os
import shutil

from trouter.data.jsonl import JsonlAppender
from trouter.evaluation.real_questions import load_gsm8k


def _rows(n: int) -> list[dict]:
    return [{"id": q.id, "question": q.prompt} for q in load_gsm8k(limit=n)]


def _ids(path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_rows_follow_a_file_replaced_by_rename(tmp_path):
    out = tmp_path / "answers.jsonl"
    rows = _rows(4)
    with JsonlAppender(out) as appender:
        appender.write(rows[0])
        appender.write(rows[1])
        snapshot = tmp_path / "snapshot.jsonl"  # what a checkout restores: the same content,
        shutil.copy(out, snapshot)  # as a new inode renamed over the old path
        os.replace(snapshot, out)
        appender.write(rows[2])
        appender.write(rows[3])
    assert _ids(out) == [r["id"] for r in rows]


def test_rows_follow_a_removed_file(tmp_path):
    out = tmp_path / "answers.jsonl"
    rows = _rows(2)
    with JsonlAppender(out) as appender:
        appender.write(rows[0])
        out.unlink()
        appender.write(rows[1])
    assert _ids(out) == [rows[1]["id"]]  # the removed row is the remover's choice; the new
    # one is not lost to an unlinked inode
