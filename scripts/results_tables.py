"""Turn `trouter eval --json` record files into README markdown tables.

Usage: python scripts/results_tables.py [--compact] results/a.json results/b.json > results.md

Per (suite, setting) and scenario: utility, performance, normalised cost and gap closed as
mean ± std over seeds (cold-start rows are the mean over held-out tasks), then AIQ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trouter.evaluation.report import compact_markdown, markdown_tables, summarise


def load_records(paths: list[str]) -> list[dict]:
    records: list[dict] = []
    for name in paths:
        path = Path(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: cannot read records: {err}") from err
        if isinstance(data, dict) and "records" in data:  # a local cold-start results.json
            data = data["records"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise SystemExit(f"{path}: expected a JSON list of records (trouter eval --json)")
        records.extend(data)
    return records


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    compact = argv[0] == "--compact"
    records = load_records(argv[1:] if compact else argv)
    if not records:
        raise SystemExit("no records in the given files")
    rows = summarise(records)
    print(compact_markdown(rows) if compact else markdown_tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
