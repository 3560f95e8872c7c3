"""The local-pool benchmark's tables (docs/local-pool.md).

Usage:
    python scripts/local_pool_table.py results/local-pool/results.json [SCENARIO ...]
        one row per router, one column per training setting, from the records
        `trouter experiment local-pool eval` wrote (default scenarios: balanced cost-first)
    python scripts/local_pool_table.py --accuracy results/local-pool
        each pool model's mean score per real benchmark and per synthetic answer format,
        and the rows that pass the generator-quality filters, from the labelled files
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    ("synthetic", "synthetic only"),
    ("synthetic-filtered", "synthetic, filtered"),
    ("few-shot K=25", "+ 25 real"),
    ("few-shot K=100", "+ 100 real"),
    ("in-domain", "in-domain (real train half)"),
)
ROUTERS = ("oracle", "dataset-oracle", "best-single", "random", "cheapest", "knn", "mlp",
           "cluster", "metric-router", "trouter", "trouter+", "auto")  # fmt: skip


def table(summary: list[dict], scenario: str) -> str:
    cells = {(r["setting"], r["router"]): r for r in summary if r["scenario"] == scenario}
    lines = [
        f"| {scenario} utility (mean ± std, 3 seeds) | "
        + " | ".join(title for _, title in COLUMNS)
        + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for router in ROUTERS:
        row = [cells.get((setting, router)) for setting, _ in COLUMNS]
        if not any(row):
            continue
        shown = [f"{r['utility_mean']:.3f} ± {r['utility_std']:.3f}" if r else "–" for r in row]
        lines.append(f"| {router} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def accuracy(folder: Path) -> str:
    """Mean performance per model and group (masked cells left out), with row counts."""
    formats = {row["id"]: row["format"] for row in _read_jsonl(folder / "synthetic_qa.jsonl")}
    groups: dict[str, list[dict]] = {}
    for row in _read_jsonl(folder / "real.jsonl"):
        groups.setdefault(f"real {row['benchmark']}", []).append(row)
    synthetic = _read_jsonl(folder / "synthetic.jsonl")
    for row in synthetic:
        groups.setdefault(f"synthetic {formats.get(row['id'], '?')}", []).append(row)
    models = list(dict.fromkeys(m for rows in groups.values() for m in rows[0]["results"]))
    lines = [
        "| questions | rows | " + " | ".join(models) + " |",
        "|---|---:|" + "---:|" * len(models),
    ]
    for name in sorted(groups):
        rows = groups[name]
        means = []
        for model in models:
            scores = [r["results"][model]["performance"] for r in rows if model in r["results"]]
            scores = [s for s in scores if s is not None]
            means.append(f"{sum(scores) / len(scores):.3f}" if scores else "–")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(means) + " |")
    both = sum(1 for r in synthetic if r.get("self_consistent") and r.get("discriminative"))
    consistent = sum(1 for r in synthetic if r.get("self_consistent"))
    discriminative = sum(1 for r in synthetic if r.get("discriminative"))
    leaves = len({r["leaf_id"] for r in synthetic})
    lines += [
        "",
        f"Synthetic rows: {len(synthetic)} over {leaves} leaves; self-consistent {consistent}, "
        f"discriminative {discriminative}, both {both}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    if argv[0] == "--accuracy" and len(argv) == 2:
        print(accuracy(Path(argv[1])))
        return
    summary = json.loads(Path(argv[0]).read_text())["summary"]
    for scenario in argv[1:] or ["balanced", "cost-first"]:
        print(table(summary, scenario))


if __name__ == "__main__":
    main(sys.argv[1:])
