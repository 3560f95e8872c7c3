"""Tables and plots of replayed streams (records of :mod:`trouter.evaluation.online`).

Every figure is a mean over the streamed tasks of one seed, then a mean ± standard
deviation over seeds, so that each seed's stream order counts once.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: The share of the skyline's last-quarter gain (computed from task means, see summarise).
SHARE = "last_quarter_skyline_share"
#: (field, column title, format) of the main table.
COLUMNS = (
    ("utility", "utility", "{:.4f}"),
    ("gain_vs_best_single", "gain vs best-single", "{:+.4f}"),
    ("last_quarter_gain", "last-quarter gain", "{:+.4f}"),
    ("last_quarter_skyline_share", "last quarter, share of skyline gain", "{:.0%}"),
    ("worst_window_gap", "worst 200-window gap", "{:+.4f}"),
    ("regret_oracle", "regret vs oracle (sum)", "{:.1f}"),
    ("passes_best_single_at", "passes best-single at", "{:.0f}"),
    ("exploration_share", "exploration", "{:.1%}"),
    ("labels", "labels", "{:.1f}"),
    ("label_usd", "label USD", "{:.3f}"),
    ("label_share_of_served", "label / served spend", "{:.0%}"),
)
#: Columns of a change scenario (shown only in its sections): drift, then a new model.
CHANGE_COLUMNS = (
    ("utility_after_change", "utility [T, T+500)", "{:.4f}"),
    ("recovered_gap", "recovered gap [T+500, end)", "{:+.4f}"),
    ("new_model_skyline_share", "skyline's share of the new model", "{:.0%}"),
    ("new_model_share", "share of the new model after T", "{:.0%}"),
    ("new_model_queries_to_80pct", "queries to 80% of skyline's share", "{:.0f}"),
    ("new_model_reached", "reached 80% (where skyline >= 10%)", "{:.0%}"),
)


NEW = "new-model"


def section(record: dict) -> str:
    """The record's suite, named with its change (e.g. ``routerbench (score-drop@400)``)."""
    suite = record.get("suite", "?")
    return f"{suite} ({record['change']})" if record.get("change") else suite


def _mean(values: list[Any]) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(records: list[dict]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """{(suite, label budget): {router: {field: (mean, std, seeds), "tasks", "seeds"}}}.

    Per seed, each field is averaged over the streamed tasks; the share of the skyline's
    gain is the ratio of those task means (a task where the skyline gains nothing would
    otherwise dominate), and then every field is a mean ± std over seeds."""
    per_seed: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        key = (section(r), r["label_budget"], r["router"], r["seed"])
        for name, *_ in COLUMNS + CHANGE_COLUMNS:
            per_seed[key][name].append(r.get(name))
        per_seed[key]["task"].append(r["task"])
        per_seed[key]["arrival"].append(r["change_model"] if NEW in r.get("change", "") else None)
    means = {
        key: {
            name: _mean(values)
            for name, values in fields.items()
            if name not in ("task", "arrival")
        }
        for key, fields in per_seed.items()
    }
    for (suite, budget, _router, seed), row in means.items():
        sky = means.get((suite, budget, "skyline", seed), {}).get("last_quarter_gain")
        ok = sky is not None and np.isfinite(sky) and sky > 1e-9
        row[SHARE] = row["last_quarter_gain"] / sky if ok else float("nan")
    grouped: dict[tuple, list[tuple[dict, int, int]]] = defaultdict(list)
    for (suite, budget, router, _seed), row in means.items():
        fields = per_seed[(suite, budget, router, _seed)]
        tasks = len(set(fields["task"]))
        arrivals = len(set(fields["arrival"])) if fields["arrival"][0] is not None else 0
        grouped[(suite, budget, router)].append((row, tasks, arrivals))
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for (suite, budget, router), seeds in grouped.items():
        summary: dict[str, Any] = {"tasks": seeds[0][1], "arrivals": seeds[0][2],
                                   "seeds": len(seeds)}  # fmt: skip
        for name, *_ in COLUMNS + CHANGE_COLUMNS:
            finite = [row[name] for row, *_ in seeds if np.isfinite(row[name])]
            summary[name] = (
                float(np.mean(finite)) if finite else float("nan"),
                float(np.std(finite)) if finite else float("nan"),
                len(finite),
            )
        out[(suite, budget)][router] = summary
    return dict(out)


def _cell(value: tuple[float, float, int], fmt: str, seeds: int) -> str:
    mean, std, n = value
    if not np.isfinite(mean):
        return "–"
    text = fmt.format(mean)
    if n > 1:
        text += " ± " + fmt.format(std).lstrip("+")
    if n < seeds:
        text += f" ({n}/{seeds} seeds)"
    return text


def markdown_tables(summary: dict, order: list[str]) -> str:
    """One markdown table per (suite, label budget), routers in ``order`` first."""
    parts = []
    for (suite, budget), rows in sorted(summary.items()):
        names = [n for n in order if n in rows] + sorted(set(rows) - set(order))
        any_row = rows[names[0]]
        title = f"### {suite}, label budget {budget} ({any_row['tasks']} streamed tasks, "
        if any_row["arrivals"]:
            title += f"{any_row['arrivals']} arriving models in turn, "
        parts.append(title + f"{any_row['seeds']} seeds)\n")
        extra = [c for c in CHANGE_COLUMNS if any(np.isfinite(r[c[0]][0]) for r in rows.values())]
        columns = COLUMNS + tuple(extra)
        parts.append("| router | " + " | ".join(c[1] for c in columns) + " |")
        parts.append("|---|" + "---:|" * len(columns))
        for name in names:
            row = rows[name]
            cells = [_cell(row[f], fmt, row["seeds"]) for f, _, fmt in columns]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def plot_streams(records: list[dict], path: Path, budget: str, routers: list[str]) -> Path:
    """Running mean utility against queries seen, one panel per streamed task (mean over
    seeds), for one label budget; best-single, skyline and oracle drawn as references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in records if r["label_budget"] == budget and r["router"] in routers]
    tasks = sorted({r["task"] for r in chosen})[:9]
    cols = min(3, len(tasks))
    rows = int(np.ceil(len(tasks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    styles = {"oracle": "k--", "best-single": "k:", "skyline": "k-."}
    palette = plt.get_cmap("tab10")
    learners = [r for r in routers if r not in styles]
    colours = {r: palette(i % 10) for i, r in enumerate(learners)}
    for ax, task in zip(axes.flat, tasks, strict=False):
        for router in routers:
            curves = [r["curve"] for r in chosen if r["task"] == task and r["router"] == router]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            points = np.mean([np.asarray(c[:length]) for c in curves], axis=0)
            style = {"color": colours[router]} if router in colours else {}
            ax.plot(
                points[:, 0], points[:, 1], styles.get(router, "-"), label=router, lw=1.2, **style
            )
        ax.set_xscale("log")
        ax.set_title(f"{chosen[0].get('suite', '')} · {task}", fontsize=9)
        ax.set_xlabel("queries seen")
        ax.set_ylabel("running mean utility")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"label budget {budget}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
