"""Merge a replay of some routers into earlier records of the same streams.

Usage: ``.venv/bin/python scripts/online_merge.py OLD.json NEW.json`` rewrites OLD.json: the
records of every router present in NEW.json replace OLD's for the same (task, seed, label
budget). Streams and orders are fixed by the seed, so the other routers' records stand; a
label budget only NEW has gets copies of OLD's budget-independent routers (every one but the
``online`` variants and ``few-shot``). NEW's records lack the skyline when it was not rerun:
their last-quarter share of the skyline's gain is recomputed from OLD's skyline record of
the same stream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BUDGET_BOUND = ("few-shot",)


def key(record: dict) -> tuple:
    return (record["task"], record["seed"], record["label_budget"], record["router"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    old, new = json.loads(args.old.read_text()), json.loads(args.new.read_text())
    rerun = {r["router"] for r in new}
    records = {key(r): r for r in old}
    budgets = {r["label_budget"] for r in old}
    for budget in sorted({r["label_budget"] for r in new} - budgets):
        for r in old:
            fixed = not r["router"].startswith("online") and r["router"] not in BUDGET_BOUND
            if r["label_budget"] == "0" and fixed and r["router"] not in rerun:
                copy = {**r, "label_budget": budget}
                records[key(copy)] = copy
    skyline = {(r["task"], r["seed"]): r for r in old if r["router"] == "skyline"}
    for r in new:
        sky = skyline.get((r["task"], r["seed"]))
        if sky is not None and r.get("last_quarter_skyline_share") is None:
            sky_gain = sky["last_quarter_gain"]
            share = r["last_quarter_gain"] / sky_gain if sky_gain > 1e-9 else None
            r["last_quarter_skyline_share"] = share
        records[key(r)] = r
    args.old.write_text(json.dumps(list(records.values()), indent=1, allow_nan=False))
    print(f"{args.old}: {len(records)} records ({len(new)} from {args.new})")


if __name__ == "__main__":
    main()
