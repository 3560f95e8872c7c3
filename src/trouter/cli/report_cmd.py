"""``trouter report traffic``: what the proxy's logged traffic and feedback say."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

report_app = typer.Typer(help="Reports on logged traffic.", no_args_is_help=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


_BY = {"dr": "doubly robust", "label_dr": "DR on labels"}


def _interval(estimate: dict) -> str:
    return f"{_fmt(estimate['mean'])} [{_fmt(estimate['low'])}, {_fmt(estimate['high'])}]"


@report_app.command("traffic")
def traffic(
    store: str = typer.Option(..., "--store", help="sqlite:///path.db or postgresql://..."),
    since: str = typer.Option("7d", help="How far back: 30m, 24h, 7d, 2w."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG of score and spend over time."),
    rounds: int = typer.Option(1000, min=10, help="Bootstrap resamples of the intervals."),
) -> None:
    """Requests and spend per model, feedback coverage, exploration, background labels, and
    off-policy estimates of each single model and the logged policy: IPS and doubly robust
    from the logged decisions, and the background labels' mean and DR on the labels."""
    from trouter.config import MalformedDataError
    from trouter.store import Store
    from trouter.store.traffic import parse_span, traffic_report

    try:
        span = parse_span(since)
    except ValueError as err:
        raise MalformedDataError(f"--since: {err}") from None
    opened = Store.open(store)
    try:
        report = traffic_report(opened, span, rounds=rounds)
    finally:
        opened.close()
    if plot is not None:
        _plot(report, plot)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=float))
        return
    _print(report)
    if plot is not None:
        typer.echo(f"wrote {plot}")


def _print(report: dict) -> None:
    console = Console()
    console.print(
        f"{report['requests']} requests, ${report['spend_usd']:.4f} served spend; "
        f"{report['feedback_events']} feedback events ({report['feedback_coverage']:.1%} of "
        f"requests scored); exploration {report['exploration_share']:.1%} "
        f"(${report['exploration_spend_usd']:.4f}); {report['background_labels']} background "
        f"labels; background spend ${report['background_spend_usd']:.4f} (labels "
        f"${report['background_spend_by_kind'].get('label', 0.0):.4f}, judging served answers "
        f"${report['background_spend_by_kind'].get('judge', 0.0):.4f}), apart from served spend"
    )
    table = Table("model", "requests", "share", "spend $", "feedback", "mean score", "ms")
    for name, row in report["models"].items():
        table.add_row(name, str(row["requests"]), f"{row['share']:.1%}",
                      f"{row['spend_usd']:.4f}", str(row["feedback"]),
                      _fmt(row["mean_score"]), f"{row['latency_ms']:.0f}")  # fmt: skip
    console.print(table)
    ope = report["off_policy"]
    greedy = ope["greedy_policy"]
    console.print(
        f"off-policy, over {ope['decisions_with_feedback']} scored decisions and "
        f"{ope['label_rows']} background labels (95% bootstrap): logged policy "
        f"{_interval(ope['logged_policy'])}; without exploration (IPS, DR, DR on labels) "
        f"{_interval(greedy['ips'])}, {_interval(greedy['dr'])}, "
        f"{_interval(greedy['label_dr'])}; best single (by {_BY[ope['best_single_by']]}): "
        f"{ope['best_single']}"
    )
    table = Table("always this model", "support", "IPS", "doubly robust", "labels",
                  "label mean", "DR on labels")  # fmt: skip
    for name, row in ope["per_model"].items():
        table.add_row(name, str(row["support"]), _interval(row["ips"]), _interval(row["dr"]),
                      str(row["labels"]), _interval(row["label_mean"]),
                      _interval(row["label_dr"]))  # fmt: skip
    console.print(table)
    console.print(
        "doubly robust: the router's predictions fill in what was not served; DR on labels: "
        "the background labels do (labels are chosen by the router, not drawn uniformly)"
    )


def _plot(report: dict, path: Path) -> None:
    from trouter.extras import require

    matplotlib = require("matplotlib", "trouter report traffic --plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["timeline"]
    hours = [(r["start"] - report["since"]) / 3600 for r in rows] if rows else []
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(hours, [r["mean_score"] if r["mean_score"] is not None else math.nan for r in rows],
             marker="o")  # fmt: skip
    top.set_ylabel("mean feedback score")
    bottom.bar(
        hours, [r["spend_usd"] for r in rows], width=(hours[1] - hours[0]) if len(hours) > 1 else 1
    )
    bottom.set_ylabel("served spend (USD)")
    bottom.set_xlabel("hours since the start of the window")
    fig.suptitle(f"trouter traffic: {report['requests']} requests")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
