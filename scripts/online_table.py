"""Render results/online/table.md from replay records (``trouter eval --setting online --json``).

Usage: ``.venv/bin/python scripts/online_table.py results/online/*.json --out
results/online/table.md`` (``--compact``: print only the one-table summary the docs carry;
``--headline 25/500,100``: README's narrower one, at those label budgets).
Three parts: the summary per suite and label budget (task means,
then mean ± std over seeds), the safety check per stream (every task and seed), and the
utility per window of the stream.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from trouter.evaluation.online_report import markdown_tables, plot_streams, section, summarise

ORDER = ["best-single", "oracle", "random", "skyline", "few-shot", "online", "online-base",
         "online-random", "online-nobase", "online-explore", "linucb", "thompson",
         "eps-greedy"]  # fmt: skip
LEARNERS = ["online", "online-base", "online-random", "online-nobase", "online-explore",
            "few-shot", "linucb", "thompson", "eps-greedy"]  # fmt: skip


def safety_table(records: list[dict]) -> str:
    """Per suite, label budget and router: the worst stream (task, seed) against the bars."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["router"] in LEARNERS:
            groups[(section(r), r["label_budget"], r["router"])].append(r)
    lines = [
        "| suite | label budget | router | streams | worst stream gain vs best-single | "
        "streams below -0.002 | worst 200-window gap | streams with a window below -0.01 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (suite, budget, router), group in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], LEARNERS.index(kv[0][2]))):  # fmt: skip
        gains = np.array([r["gain_vs_best_single"] for r in group])
        windows = np.array([r["worst_window_gap"] for r in group])
        below, dips = int((gains < -0.002).sum()), int((windows < -0.01).sum())
        lines.append(
            f"| {suite} | {budget} | {router} | {len(group)} | {gains.min():+.4f} | "
            f"{below} | {windows.min():+.4f} | {dips} |"
        )
    return "\n".join(lines)


def window_table(records: list[dict], routers: list[str]) -> str:
    """Mean utility per window of the stream (over tasks that reach it, then seeds)."""
    rows: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    names: list[str] = []
    for r in records:
        if r["router"] not in routers:
            continue
        for window, value in r["windows"].items():
            rows[(section(r), r["label_budget"], r["router"])][window].append(value)
            if window not in names:
                names.append(window)
    names.sort(key=lambda w: int(w.split("-")[0]))
    lines = ["| suite | label budget | router | " + " | ".join(names) + " |",
             "|---|---|---|" + "---:|" * len(names)]  # fmt: skip
    for (suite, budget, router), values in sorted(rows.items(), key=lambda kv: (
            kv[0][0], kv[0][1], routers.index(kv[0][2]))):  # fmt: skip
        cells = [f"{np.mean(values[w]):.4f}" if values.get(w) else "–" for w in names]
        lines.append(f"| {suite} | {budget} | {router} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_regime(record: dict) -> dict:
    """The record, its suite named with the weights and the feedback regime where those are
    not the defaults (balanced; every served query scored at once, exactly)."""
    feedback = record.get("feedback") or {}
    if record.get("scenario", "balanced") != "balanced":
        record = {**record, "suite": f"{record['suite']} ({record['scenario']})"}
    if feedback and feedback != {"rate": 1, "noise": 0, "delay": 0}:
        regime = ", ".join(f"{k} {v}" for k, v in feedback.items())
        record = {**record, "suite": f"{record['suite']} (feedback {regime})"}
    return record


COMPACT = ["skyline", "few-shot", "online", "online-base", "online-random", "linucb",
           "thompson", "eps-greedy"]  # fmt: skip
#: README's cut: the references, few-shot, the default router and the strongest peer
HEADLINE = ["skyline", "few-shot", "online", "eps-greedy"]
WITH_SHARE = ("few-shot", "online", "online-base", "online-random")


def compact_table(
    records: list[dict], columns: list[str] = COMPACT, budgets: list[str] | None = None
) -> str:
    """One row per suite and label budget (``budgets`` only, when given): best-single's
    utility, every other router's gain over it (whole stream; for the label users, the last
    quarter's share of the skyline's gain in brackets), and the worst stream and 200-window
    of ``online``."""
    summary = summarise(records)
    head = ["suite, label budget", "best-single", "oracle", "random", *columns,
            "`online` worst stream", "`online` worst 200-window"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    worst = defaultdict(list)
    for r in records:
        if r["router"] == "online":
            worst[(section(r), r["label_budget"])].append(r)
    for (suite, budget), routers in summary.items():
        if not any(name in routers for name in ("online", "online-base")):
            continue
        if budgets is not None and budget not in budgets:
            continue
        cells = [f"{suite}, {budget}", f"{routers['best-single']['utility'][0]:.4f}"]
        for name in ["oracle", "random", *columns]:
            if name not in routers:
                cells.append("–")
                continue
            mean, std, _ = routers[name]["gain_vs_best_single"]
            text = f"{mean:+.4f}" + (f" ± {std:.4f}" if name.startswith("online") else "")
            share = routers[name]["last_quarter_skyline_share"][0]
            if name in WITH_SHARE and budget != "0" and np.isfinite(share):
                text += f" ({share:.0%})"
            cells.append(text)
        streams = worst[(suite, budget)]
        cells.append(f"{min(r['gain_vs_best_single'] for r in streams):+.4f}" if streams else "–")
        cells.append(f"{min(r['worst_window_gap'] for r in streams):+.4f}" if streams else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compact", action="store_true", help="print the docs' table only")
    parser.add_argument("--headline", default=None, metavar="BUDGETS",
                        help="print README's table only: these label budgets (e.g. 25/500,100)")
    args = parser.parse_args()
    records = [with_regime(r) for path in args.records for r in json.loads(path.read_text())]
    if args.headline:
        print(compact_table(records, HEADLINE, args.headline.split(",")))
        return
    if args.compact:
        print(compact_table(records))
        return
    if args.out is None:
        parser.error("give --out (or --compact)")
    text = [
        "# Online replay results",
        "",
        "Made by `bash scripts/online_runs.sh` (the `trouter eval --setting online` commands) "
        "and rendered by `.venv/bin/python scripts/online_table.py results/online/*.json --out "
        "results/online/table.md`. Balanced weights; base `auto` fitted as in the cold-start "
        "setting; every figure a mean over streamed tasks, then mean ± std over 3 stream orders.",
        "",
        "## Summary",
        "",
        markdown_tables(summarise(records), ORDER),
        "## Safety per stream (every task x seed)",
        "",
        safety_table(records),
        "",
        "## Utility per window of the stream",
        "",
        window_table(
            records,
            [
                "best-single",
                "skyline",
                "oracle",
                "few-shot",
                "online",
                "online-base",
                "online-random",
                "linucb",
                "thompson",
                "eps-greedy",
            ],
        ),  # fmt: skip
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print(f"wrote {args.out}")
    for suite in sorted({section(r) for r in records}):
        mine = [r for r in records if section(r) == suite]
        name = {"real": "local-pool"}.get(suite, suite)
        if "(feedback" in name:
            name = name.split(" (")[0] + "-noisy"
        elif mine[0].get("scenario", "balanced") != "balanced":
            name = name.split(" (")[0] + "-" + mine[0]["scenario"]
        if mine[0].get("change"):  # e.g. routerbench-score-drop
            name = mine[0]["suite"] + "-" + mine[0]["change"].split("@")[0].split(":")[0]
        for budget in sorted({r["label_budget"] for r in mine}):
            path = args.out.parent / f"{name}_budget{budget.replace('/', '-in-')}.png"
            shown = [n for n in ORDER if n != "random"]
            print(f"wrote {plot_streams(mine, path, budget, shown)}")


if __name__ == "__main__":
    main()
