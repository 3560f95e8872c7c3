"""Turn `trouter eval --json` record files into the markdown tables of README and docs/.

Usage: python scripts/results_tables.py [--compact|--curve|--checks|--headline] results/a.json ...

``--curve`` prints the few-shot learning-curve tables (balanced utility per K, and the share of
each router's own K=all gain over best-single reached at each K); ``--checks`` the few-shot
checks of ``auto`` against best-single (K=0 per held-out task, shares at K=25 / K=100);
``--headline`` one row per suite: ``auto`` on a new task with K labelled rows, beside
best-single and the oracle (balanced); ``--suites`` the size of each suite's splits as the
records of an in-domain run saw them.
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
    few_shot_checks_markdown,
    fmt,
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


HEADLINE_SHOTS = ("0", "25", "100", "all")


def headline_markdown(rows: list[dict], router: str = "auto", scenario: str = "balanced") -> str:
    """Per suite: best-single, random and ``router`` on a held-out task with K labelled rows
    of it, and the oracle."""
    cell = {
        (r["suite"], r["router"], r["setting"].split("K=")[1]): r
        for r in rows
        if r["setting"].startswith("few-shot") and r["scenario"] == scenario
    }

    def show(suite: str, name: str, k: str) -> str:
        row = cell.get((suite, name, k))
        return fmt(row["utility_mean"], row["utility_std"]) if row else "–"

    suites = list(dict.fromkeys(suite for suite, *_ in cell))
    lines = [
        f"| {scenario} utility on a new task | best-single | random | "
        + " | ".join(f"{router}, K={k}" for k in HEADLINE_SHOTS)
        + " | oracle |",
        "|---|---:|---:|" + "---:|" * len(HEADLINE_SHOTS) + "---:|",
    ]
    for suite in suites:
        seeds = max(r["seeds"] for (s, *_), r in cell.items() if s == suite)
        shown = [show(suite, router, k) for k in HEADLINE_SHOTS]
        lines.append(
            f"| {suite} ({seeds} seeds) | {show(suite, 'best-single', '0')} | "
            f"{show(suite, 'random', '0')} | "
            + " | ".join(shown)
            + f" | {show(suite, 'oracle', '0')} |"
        )
    return "\n".join(lines) + "\n"


def suites_markdown(records: list[dict]) -> str:
    """Per suite: models, train / validation / test rows, and test rows left out as masked."""
    lines = [
        "| suite | models | train / validation / test rows | test rows with a masked cell |",
        "|---|---:|---|---:|",
    ]
    seen: set[str] = set()
    for r in records:
        if r["setting"] != "in-domain" or r.get("task", "all") != "all" or r["suite"] in seen:
            continue
        seen.add(r["suite"])
        n_test = r["n_test"] + r["masked_rows"]
        lines.append(
            f"| {r['suite']} | {len(r['selection'])} | {r['n_train']} / {r['n_validation']} / "
            f"{n_test} | {r['masked_rows']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] == "--learning-curve" and len(argv) > 2:
        from trouter.evaluation.plots import plot_learning_curves

        print(plot_learning_curves(load_records(argv[2:]), argv[1]))
        return 0
    modes = ("--compact", "--curve", "--checks", "--headline", "--suites")
    mode = argv[0] if argv[0] in modes else None
    records = load_records(argv[1:] if mode else argv)
    if not records:
        raise SystemExit("no records in the given files")
    rows = summarise(records)
    if mode == "--checks":
        print(few_shot_checks_markdown(records))
    elif mode == "--headline":
        print(headline_markdown(rows))
    elif mode == "--suites":
        print(suites_markdown(records))
    elif mode == "--curve":
        print(learning_curve_markdown(rows))
    else:
        print(compact_markdown(rows) if mode == "--compact" else markdown_tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
