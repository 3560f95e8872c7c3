"""Summaries of evaluation records: mean ± std over seeds, as Rich and markdown tables.

The headline row of a (suite, setting, router, scenario) is the whole-test-set record
(``task="all"``) or, for leave-one-task-out runs, the mean over held-out tasks
(``task="mean"``); per-task records stay in the JSON for drill-down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from rich.table import Table

from trouter.evaluation.metrics import SAVING_LEVELS

#: The "cost saved at X% of the top model's quality" fields the metrics write.
SAVING_FIELDS = tuple(f"cost_saved_{level}" for level in SAVING_LEVELS)
#: Fields summarised as mean ± std over seeds.
SUMMARY_FIELDS = ("utility", "performance", "cost", "raw_cost", "gap_closed", "aiq",
                  *SAVING_FIELDS)  # fmt: skip
HEADLINE_TASKS = ("all", "mean")


def run_setting(record: dict) -> str:
    """The setting a record is summarised under; few-shot runs are one setting per K."""
    if record["setting"] != "few-shot":
        return record["setting"]
    shots = record.get("shots")
    return f"few-shot K={'all' if shots is None else shots}"


def headline_records(records: Iterable[dict]) -> list[dict]:
    """The records that stand for a whole run (not the per-task breakdown)."""
    return [r for r in records if r.get("task", "all") in HEADLINE_TASKS]


def _finite(values: list[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = _finite(values)
    if finite.size == 0:
        return float("nan"), float("nan")
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), std


def summarise(records: Iterable[dict]) -> list[dict]:
    """One row per (suite, setting, router, scenario): mean and std over seeds.

    Rows keep the order in which routers and scenarios first appear in ``records``.
    Each row has ``<field>_mean`` and ``<field>_std`` for :data:`SUMMARY_FIELDS`, the
    number of seeds, and the mean selection share per model. The savings are undefined in a
    seed whose router never reaches the quality level, so their mean is over the seeds that
    do; ``cost_saved_<X>_seeds`` counts those.
    """
    groups: dict[tuple, list[dict]] = {}
    for record in headline_records(records):
        key = (record["suite"], run_setting(record), record["router"], record["scenario"])
        groups.setdefault(key, []).append(record)
    rows = []
    for (suite, setting, router, scenario), group in groups.items():
        row: dict = {
            "suite": suite,
            "setting": setting,
            "router": router,
            "scenario": scenario,
            "seeds": len({r["seed"] for r in group}),
            "shots": group[0].get("shots"),
        }
        for field in SUMMARY_FIELDS:
            row[f"{field}_mean"], row[f"{field}_std"] = _mean_std([r.get(field) for r in group])
        for field in SAVING_FIELDS:
            row[f"{field}_seeds"] = int(_finite([r.get(field) for r in group]).size)
        models = list(group[0]["selection"])
        row["selection"] = {m: float(np.mean([r["selection"][m] for r in group])) for m in models}
        rows.append(row)
    return rows


def _pct(row: dict, field: str) -> str:
    """A saving as ``mean% ± std``; where only some seeds reach the level, how many did
    (a mean over 1 of 3 seeds must not read like a result of all three)."""
    mean, std = row.get(f"{field}_mean", float("nan")), row.get(f"{field}_std", float("nan"))
    if math.isnan(mean):
        return "–"
    reached, seeds = row.get(f"{field}_seeds", row["seeds"]), row["seeds"]
    if reached < seeds:
        return f"{100 * mean:.0f}% ({reached} of {seeds} seeds)"
    return f"{100 * mean:.0f}% ± {100 * std:.0f}"


def fmt(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` with a fixed number of decimals; ``n/a`` when undefined."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt_usd(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.4g} ± {std:.2g}"


def _top_model(selection: dict[str, float]) -> str:
    if not selection:
        return ""
    model = max(selection, key=selection.get)
    return f"{model} ({selection[model]:.0%})"


def rich_tables(rows: list[dict]) -> list[Table]:
    """One Rich table per (suite, setting): a row per scenario x router."""
    tables = []
    for (suite, setting), block in _by_run(rows).items():
        seeds = max(r["seeds"] for r in block)
        title = f"{suite} · {setting} · mean ± std over {seeds} seed(s)"
        if setting == "cold-start" or setting.startswith("few-shot"):
            title += " · mean over held-out tasks"
        table = Table(title=title)
        for column in (
            "scenario",
            "router",
            "utility",
            "performance",
            "norm. cost",
            "raw cost USD",
            "gap closed",
            "AIQ",
            "saved@95%",
            "most chosen",
        ):
            table.add_column(
                column,
                justify="left" if column in ("scenario", "router", "most chosen") else "right",
            )
        previous = None
        for row in block:
            table.add_row(
                row["scenario"] if row["scenario"] != previous else "",
                row["router"],
                fmt(row["utility_mean"], row["utility_std"]),
                fmt(row["performance_mean"], row["performance_std"]),
                fmt(row["cost_mean"], row["cost_std"]),
                _fmt_usd(row["raw_cost_mean"], row["raw_cost_std"]),
                fmt(row["gap_closed_mean"], row["gap_closed_std"], 2),
                fmt(row["aiq_mean"], row["aiq_std"]),
                _pct(row, "cost_saved_95"),
                _top_model(row["selection"]),
                end_section=False,
            )
            previous = row["scenario"]
        tables.append(table)
    return tables


def markdown_tables(rows: list[dict]) -> str:
    """README-ready markdown: per (suite, setting), a table per scenario and one of AIQ."""
    out = []
    for (suite, setting), block in _by_run(rows).items():
        seeds = max(r["seeds"] for r in block)
        per_task = setting == "cold-start" or setting.startswith("few-shot")
        note = " (mean over held-out tasks)" if per_task else ""
        out.append(f"### {suite} · {setting}{note} · mean ± std over {seeds} seed(s)\n")
        scenarios = list(dict.fromkeys(r["scenario"] for r in block))
        for scenario in scenarios:
            out.append(f"**{scenario}**\n")
            out.append("| router | utility | performance | norm. cost | gap closed |")
            out.append("|---|---:|---:|---:|---:|")
            for row in (r for r in block if r["scenario"] == scenario):
                out.append(
                    f"| {row['router']} | {fmt(row['utility_mean'], row['utility_std'])} "
                    f"| {fmt(row['performance_mean'], row['performance_std'])} "
                    f"| {fmt(row['cost_mean'], row['cost_std'])} "
                    f"| {fmt(row['gap_closed_mean'], row['gap_closed_std'], 2)} |"
                )
            out.append("")
        out.append("**AIQ** (area under the cost–quality hull, normalised cost in [0, 1])\n")
        out.append("| router | AIQ |")
        out.append("|---|---:|")
        first = scenarios[0]
        for row in (r for r in block if r["scenario"] == first):
            out.append(f"| {row['router']} | {fmt(row['aiq_mean'], row['aiq_std'])} |")
        out.append("")
    return "\n".join(out)


def _by_run(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows grouped by (suite, setting), each block sorted by scenario then router order."""
    blocks: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        blocks.setdefault((row["suite"], row["setting"]), []).append(row)
    for key, block in blocks.items():
        scenario_order = {s: i for i, s in enumerate(dict.fromkeys(r["scenario"] for r in block))}
        router_order = {s: i for i, s in enumerate(dict.fromkeys(r["router"] for r in block))}
        blocks[key] = sorted(
            block, key=lambda r: (scenario_order[r["scenario"]], router_order[r["router"]])
        )
    return blocks


def compact_markdown(rows: list[dict]) -> str:
    """One table per (suite, setting): utility per scenario, balanced gap closed, AIQ.

    Scenarios other than the three named ones are left out; the full tables keep them.
    """
    scenarios = ("performance-first", "balanced", "cost-first")
    lines: list[str] = []
    for (suite, setting), run_rows in _by_run(rows).items():
        cell = {(r["router"], r["scenario"]): r for r in run_rows}
        routers = list(dict.fromkeys(r["router"] for r in run_rows))
        seeds = max(r["seeds"] for r in run_rows)
        lines += [
            f"**{suite} · {setting}** (utility, mean ± std over {seeds} seed(s))",
            "",
            "| router | performance-first | balanced | cost-first | gap closed (bal.) | AIQ "
            "| saved @95% | saved @100% |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for router in routers:
            utilities = [
                fmt(cell[(router, s)]["utility_mean"], cell[(router, s)]["utility_std"])
                if (router, s) in cell
                else "–"
                for s in scenarios
            ]
            balanced = cell.get((router, "balanced"))
            gap = (
                fmt(balanced["gap_closed_mean"], balanced["gap_closed_std"], 2) if balanced else "–"
            )
            aiq = fmt(balanced["aiq_mean"], balanced["aiq_std"]) if balanced else "–"
            saved = [_pct(balanced, f) if balanced else "–" for f in SAVING_FIELDS]
            lines.append(
                f"| {router} | {' | '.join(utilities)} | {gap} | {aiq} | {' | '.join(saved)} |"
            )
        lines.append("")
    return "\n".join(lines)


def learning_curve_markdown(rows: list[dict], scenario: str = "balanced") -> str:
    """Few-shot rows as one table per suite: utility per K for every router, then the share
    of its own K=all (in-domain) gain over best-single that each router reaches per K."""
    lines: list[str] = []
    by_suite: dict[str, list[dict]] = {}
    for row in rows:
        if row["setting"].startswith("few-shot") and row["scenario"] == scenario:
            by_suite.setdefault(row["suite"], []).append(row)
    for suite, block in by_suite.items():
        ks = list(dict.fromkeys(r["setting"].split("K=")[1] for r in block))
        ks.sort(key=lambda k: float("inf") if k == "all" else int(k))
        cell = {(r["router"], r["setting"].split("K=")[1]): r for r in block}
        routers = list(dict.fromkeys(r["router"] for r in block))
        seeds = max(r["seeds"] for r in block)
        lines += [
            f"**{suite} · few-shot · {scenario}** (utility, mean over held-out tasks, "
            f"mean ± std over {seeds} seed(s))",
            "",
            "| router | " + " | ".join(f"K={k}" for k in ks) + " |",
            "|---|" + "---:|" * len(ks),
        ]
        for router in routers:
            values = [
                fmt(cell[(router, k)]["utility_mean"], cell[(router, k)]["utility_std"])
                if (router, k) in cell
                else "–"
                for k in ks
            ]
            lines.append(f"| {router} | " + " | ".join(values) + " |")
        lines.append("")
        if "all" in ks and ("best-single", "0") in cell:
            base = cell[("best-single", "0")]["utility_mean"]
            lines += [
                "Share of the router's own K=all gain over best-single (K=0) reached at K:",
                "",
                "| router | " + " | ".join(f"K={k}" for k in ks if k != "all") + " |",
                "|---|" + "---:|" * (len(ks) - 1),
            ]
            for router in routers:
                if router in ("oracle", "best-single", "random") or (router, "all") not in cell:
                    continue
                full = cell[(router, "all")]["utility_mean"] - base
                shares = [
                    f"{(cell[(router, k)]['utility_mean'] - base) / full:.2f}"
                    if (router, k) in cell and full > 1e-9
                    else "–"
                    for k in ks
                    if k != "all"
                ]
                lines.append(f"| {router} | " + " | ".join(shares) + " |")
            lines.append("")
    return "\n".join(lines)


def few_shot_checks_markdown(
    records: Iterable[dict], router: str = "auto", tolerance: float = 0.005
) -> str:
    """Per suite and scenario, the few-shot checks of ``router`` against best-single.

    K=0: the mean over held-out tasks (mean over seeds) beside best-single's and the
    oracle's, and the
    held-out tasks where the router is below best-single by more than ``tolerance`` (per
    task, mean over seeds). K=25 / K=100: the share of the router's own K=all gain over
    best-single (K=0) that it reaches, as in :func:`learning_curve_markdown`.
    """
    per_task: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("setting") != "few-shot" or r["router"] not in (router, "best-single", "oracle"):
            continue
        key = (r["suite"], r["scenario"], r["router"], r.get("shots"), r["task"])
        per_task.setdefault(key, []).append(r["utility"])
    mean = {key: float(np.mean(values)) for key, values in per_task.items()}
    lines = [
        f"| suite | scenario | K=0 {router} | K=0 best-single | K=0 oracle "
        f"| tasks below by > {tolerance} | share K=25 | share K=100 |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    runs = dict.fromkeys((suite, scenario) for suite, scenario, *_ in mean)
    for suite, scenario in runs:

        def get(name: str, shots: int | None, task: str = "mean", s=suite, c=scenario):
            return mean.get((s, c, name, shots, task), float("nan"))

        tasks = sorted({k[4] for k in mean if k[:4] == (suite, scenario, router, 0)} - {"mean"})
        below = [
            f"{t} ({get(router, 0, t) - get('best-single', 0, t):+.3f})"
            for t in tasks
            if get(router, 0, t) < get("best-single", 0, t) - tolerance
        ]
        base, full = get("best-single", 0), get(router, None) - get("best-single", 0)

        def share(k: int, b=base, f=full) -> str:
            value = get(router, k)
            return f"{(value - b) / f:.2f}" if f > 1e-9 and not math.isnan(value) else "–"

        lines.append(
            f"| {suite} | {scenario} | {get(router, 0):.3f} | {base:.3f} | "
            f"{get('oracle', 0):.3f} | "
            f"{len(below)} of {len(tasks)}{': ' + ', '.join(below) if below else ''} | "
            f"{share(25)} | {share(100)} |"
        )
    return "\n".join(lines) + "\n"
