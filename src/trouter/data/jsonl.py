"""Reading the project's JSONL files: one object per line, errors that name file:line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trouter.config import MalformedDataError


def iter_json_objects(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield ``(where, line_number, row)`` per non-blank line; ``where`` is ``file:line``.

    A line that is not a JSON object raises :class:`MalformedDataError` naming it.
    """
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise MalformedDataError(f"cannot read {path}: {err}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise MalformedDataError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise MalformedDataError(
                    f"{where}: expected a JSON object, got {type(row).__name__}"
                )
            yield where, number, row
