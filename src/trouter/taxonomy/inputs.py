"""What a user gives the taxonomy builder: domain descriptions and example queries.

Both are parsed here, before any LLM call, so a bad ``--domain`` or a malformed examples
file fails at once with the file and line, not after a paid generation loop.
"""

from __future__ import annotations

import json
from pathlib import Path

from trouter.taxonomy.model import TaskProfile

MAX_EXAMPLES = 40
MAX_EXAMPLE_CHARS = 300


class TaxonomyBuildError(RuntimeError):
    """The taxonomy could not be built (bad inputs or an unusable checkpoint)."""


def parse_domain_arg(text: str) -> TaskProfile:
    """``"Legal reasoning: questions about statutes..."`` -> profile (definition optional)."""
    name, _, definition = text.partition(":")
    name = name.strip()
    if not name or ">" in name:
        raise TaxonomyBuildError(f"--domain {text!r}: expected 'Name: definition' (no '>')")
    return TaskProfile(name=name, definition=definition.strip(), example="")


def load_example_queries(path: str | Path) -> list[str]:
    """Queries from a text file (one per line) or JSONL (field question/query/prompt/text)."""
    from trouter.config import MalformedDataError
    from trouter.data.jsonl import read_text

    path = Path(path)
    try:
        lines = read_text(path, "example queries file").splitlines()
    except MalformedDataError as err:
        raise TaxonomyBuildError(str(err)) from None
    queries: list[str] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaxonomyBuildError(f"{path}:{number}: invalid JSON ({err.msg})") from None
            text = next(
                (
                    row[k]
                    for k in ("question", "query", "prompt", "text")
                    if isinstance(row.get(k), str)
                ),
                None,
            )
            if text is None:
                raise TaxonomyBuildError(
                    f"{path}:{number}: no 'question', 'query', 'prompt' or 'text' field"
                )
            line = text.strip()
        queries.append(" ".join(line.split())[:MAX_EXAMPLE_CHARS])
    if not queries:
        raise TaxonomyBuildError(f"{path}: no example queries found")
    return queries
