"""Cost-quality curves of evaluation records as a PNG (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trouter.evaluation.report import headline_records, run_setting, summarise  # noqa: E402

#: Reference routers drawn with a fixed, recognisable style.
STYLES = {
    "oracle": {"color": "black", "marker": "*", "markersize": 9, "linestyle": "--"},
    "best-single": {"color": "dimgray", "marker": "s", "markersize": 6, "linestyle": ":"},
    "random": {"color": "silver", "marker": "x", "markersize": 6, "linestyle": ""},
}


def mean_curves(records: list[dict]) -> dict[tuple[str, str], dict[str, tuple[np.ndarray, float]]]:
    """Per (suite, setting) and router: the cost-quality curve and AIQ averaged over seeds.

    Each record of a run carries the same curve and AIQ for every scenario, so one record
    per seed is used. The AIQ is the records' own (for cold-start, the mean of per-task
    areas), so the legend matches the tables.
    """
    per_seed: dict[tuple[str, str], dict[str, dict[int, dict]]] = {}
    for record in headline_records(records):
        run = (record["suite"], run_setting(record))
        per_seed.setdefault(run, {}).setdefault(record["router"], {})[record["seed"]] = record
    return {
        run: {
            router: (
                np.mean([r["curve"] for r in seeds.values()], axis=0),
                float(np.mean([r["aiq"] for r in seeds.values()])),
            )
            for router, seeds in routers.items()
        }
        for run, routers in per_seed.items()
    }


def plot_curves(records: list[dict], path: str | Path) -> Path:
    """Write one panel per (suite, setting): a line per router, oracle and best-single marked."""
    curves = mean_curves(records)
    if not curves:
        raise ValueError("no records with cost-quality curves to plot")
    fig, axes = plt.subplots(
        1, len(curves), figsize=(6.5 * len(curves), 5), squeeze=False, constrained_layout=True
    )
    for ax, ((suite, setting), routers) in zip(axes[0], curves.items(), strict=True):
        for router, (curve, area) in routers.items():
            style = STYLES.get(router, {"marker": "o", "markersize": 4, "linestyle": "-"})
            ax.plot(
                curve[:, 0],
                curve[:, 1],
                label=f"{router} (AIQ {area:.3f})",
                linewidth=1.5,
                **style,
            )
        # Routed costs often sit far below 1; zoom on them but keep the zero-cost edge in view.
        ax.set_xlim(left=0.0)
        ax.set_xlabel("mean normalised cost of the chosen models")
        ax.set_ylabel("mean performance")
        ax.set_title(f"{suite} · {setting}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_learning_curves(records: list[dict], path: str | Path, scenario: str = "balanced") -> Path:
    """Few-shot learning curves: utility against K per router, one panel per suite.

    The value at each K is the mean over held-out tasks, averaged over seeds, with the seed
    spread as error bars; ``K=all`` (every train row of the task) is drawn at the right end.
    Oracle and best-single are drawn as reference lines.
    """
    rows = [
        r
        for r in summarise(records)
        if r["setting"].startswith("few-shot") and r["scenario"] == scenario
    ]
    if not rows:
        raise ValueError("no few-shot records to plot a learning curve from")
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    fig, axes = plt.subplots(
        1, len(suites), figsize=(6.5 * len(suites), 4.8), squeeze=False, constrained_layout=True
    )
    for ax, suite in zip(axes[0], suites, strict=True):
        block = [r for r in rows if r["suite"] == suite]
        numeric = sorted({r["shots"] for r in block if r["shots"] is not None})
        right = (
            (max(numeric) * 1.6 if numeric and max(numeric) > 0 else 1.0)
            if any(r["shots"] is None for r in block)
            else None
        )
        ticks = numeric + ([right] if right is not None else [])
        for router in dict.fromkeys(r["router"] for r in block):
            mine = [r for r in block if r["router"] == router]
            mine.sort(key=lambda r: right if r["shots"] is None else r["shots"])
            xs = [right if r["shots"] is None else r["shots"] for r in mine]
            style = STYLES.get(router, {"marker": "o", "markersize": 4, "linestyle": "-"})
            ax.errorbar(
                xs,
                [r["utility_mean"] for r in mine],
                yerr=[r["utility_std"] for r in mine],
                label=router,
                linewidth=1.5,
                capsize=2,
                **style,
            )
        ax.set_xticks(ticks, [str(k) for k in numeric] + (["all"] if right is not None else []))
        ax.set_xlabel("labelled rows K of the held-out task")
        ax.set_ylabel(f"utility ({scenario})")
        ax.set_title(f"{suite} · few-shot (mean over held-out tasks)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
