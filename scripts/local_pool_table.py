"""The README's condensed local-pool table: one row per router, one column per training
setting, for one scenario, from the records `trouter experiment local-pool eval` wrote.

Usage: python scripts/local_pool_table.py results/local-pool/results.json [SCENARIO ...]
(default scenarios: balanced cost-first)
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


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    summary = json.loads(Path(argv[0]).read_text())["summary"]
    for scenario in argv[1:] or ["balanced", "cost-first"]:
        print(table(summary, scenario))


if __name__ == "__main__":
    main(sys.argv[1:])
