"""The encoder comparison of docs/results.md: static encoder against MiniLM, per router.

Reads the MiniLM records behind the results tables (``results/<suite>-<setting>.json``) and the
static-encoder runs of the same command (``results/static/<suite>-<setting>-<router>.json``,
made by ``scripts/run_static.sh``), and prints one markdown row per suite, setting, router and
scenario: utility mean ± std over seeds for each encoder, the difference, and whether it is
within the 0.005 that decides the default. Oracle, best-single and random are printed from
the static run beside them (they do not depend on the encoder).

Usage: ``python scripts/encoder_table.py [results]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trouter.evaluation.report import fmt, summarise

TOLERANCE = 0.005
REFERENCES = ("best-single", "oracle", "random")


def main(root: Path) -> None:
    print("| suite | setting | scenario | best-single | oracle | random | router | seeds | MiniLM "
          "| static | Δ |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---|---|---:|---:|---:|")
    for path in sorted((root / "static").glob("*-*-*.json")):
        static_records = json.loads(path.read_text())
        suite, setting = static_records[0]["suite"], static_records[0]["setting"]
        baseline = json.loads((root / f"{suite}-{setting}.json").read_text())
        minilm = {(r["router"], r["scenario"]): r for r in summarise(baseline)}
        # the same seeds on both sides: the MiniLM runs of some settings have 1 seed
        routers = {r["router"] for r in static_records} - set(REFERENCES)
        seeds = {r["seed"] for r in baseline if r["router"] in routers}
        static_rows = summarise(r for r in static_records if r["seed"] in seeds)
        refs = {(r["router"], r["scenario"]): r for r in static_rows if r["router"] in REFERENCES}
        for row in static_rows:
            key = (row["router"], row["scenario"])
            if row["router"] in REFERENCES:
                continue
            old = minilm.get(key)
            delta = row["utility_mean"] - old["utility_mean"] if old else float("nan")
            verdict = (
                "" if abs(delta) <= TOLERANCE else (" **better**" if delta > 0 else " **worse**")
            )
            columns = (refs.get((name, row["scenario"])) for name in REFERENCES)
            beside = " | ".join(
                fmt(ref["utility_mean"], ref["utility_std"]) if ref else "n/a" for ref in columns
            )
            print(
                f"| {suite} | {setting} | {row['scenario']} | {beside} | {row['router']} | "
                f"{row['seeds']} | "
                f"{fmt(old['utility_mean'], old['utility_std']) if old else 'n/a'} | "
                f"{fmt(row['utility_mean'], row['utility_std'])} | {delta:+.4f}{verdict} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("results"))
