"""Turn `trouter eval --json` record files into README markdown tables.

Usage: python scripts/results_tables.py [--compact|--curve|--goals] results/a.json ... > results.md

``--curve`` prints the few-shot learning-curve tables (balanced utility per K, and the share of
each router's own K=all gain over best-single reached at each K); ``--goals`` the few-shot
checks of ``auto`` against best-single (K=0 per held-out task, shares at K=25 / K=100).
``--learning-curve OUT.png`` draws the few-shot learning curve of the records (e.g. of a run
split over jobs with ``trouter eval --first-seed``).

Per (suite, setting) and scenario: utility, performance, normalised cost and gap closed as
mean ± std over seeds (cold-start rows are the mean over held-out tasks), then AIQ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trouter.evaluation.report import (
    compact_markdown,
    few_shot_goals_markdown,
    learning_curve_markdown,
    markdown_tables,
    summarise,
)


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
    if argv[0] == "--learning-curve" and len(argv) > 2:
        from trouter.evaluation.plots import plot_learning_curves

        print(plot_learning_curves(load_records(argv[2:]), argv[1]))
        return 0
    mode = argv[0] if argv[0] in ("--compact", "--curve", "--goals") else None
    records = load_records(argv[1:] if mode else argv)
    if not records:
        raise SystemExit("no records in the given files")
    rows = summarise(records)
    if mode == "--goals":
        print(few_shot_goals_markdown(records))
    elif mode == "--curve":
        print(learning_curve_markdown(rows))
    else:
        print(compact_markdown(rows) if mode == "--compact" else markdown_tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
