"""``trouter eval``: evaluate routers on a benchmark suite and report the method's metrics."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trouter.cli.errors import fail
from trouter.cli.options import comma_list, parse_params

#: Routers shown in every report, whatever was requested: the bounds (the oracle per query and
#: per task), the chance level, and the two constant choices.
ALWAYS = ("oracle", "dataset-oracle", "best-single", "random", "cheapest")


class Setting(StrEnum):
    in_domain = "in-domain"
    cold_start = "cold-start"
    few_shot = "few-shot"
    synthetic = "synthetic"
    transfer = "transfer"
    online = "online"


def parse_shots(spec: str) -> list[int | None]:
    """``0,10,25,all`` -> [0, 10, 25, None]; anything else is a usage error."""
    shots: list[int | None] = []
    for item in comma_list(spec):
        if item == "all":
            shots.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            value = -1
        if value < 0:
            raise typer.BadParameter(
                f"{item!r} is not a number of rows >= 0 or 'all'", param_hint="--shots"
            )
        shots.append(value)
    if not shots:
        raise typer.BadParameter("give at least one K, e.g. 0,10,25,50,100", param_hint="--shots")
    return list(dict.fromkeys(shots))


def parse_routers(spec: str) -> list[str]:
    """The requested routers plus :data:`ALWAYS`; unknown names are a usage error."""
    from trouter.routers import ROUTERS

    requested = comma_list(spec)
    unknown = [name for name in requested if name not in ROUTERS]
    if unknown:
        raise typer.BadParameter(
            f"unknown router(s) {', '.join(unknown)}; registered: {', '.join(sorted(ROUTERS))}",
            param_hint="--routers",
        )
    return list(dict.fromkeys([*ALWAYS, *requested]))


def _json_safe(value: Any) -> Any:
    """NaN -> null, so that the record file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the top-level app."""

    app.command("eval")(eval_command)


def eval_command(
    suite: str | None = typer.Option(
        None,
        "--suite",
        help="Benchmark suite, e.g. routerbench (the training source of --setting transfer "
        "unless --train-file is given).",
    ),
    setting: Setting = typer.Option(Setting.in_domain, "--setting", help="Evaluation setting."),
    routers: str = typer.Option(
        "",
        "--routers",
        help="Comma-separated router names; oracle, dataset-oracle, best-single, random and "
        "cheapest are always added.",
    ),
    scenario: str = typer.Option(
        "all",
        "--scenario",
        help="all, a comma list of scenario names, or perf:cost weights such as 0.7:-0.3.",
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Run seeds 0..N-1."),
    first_seed: int = typer.Option(
        0, "--first-seed", min=0, help="Start the seeds here (to split a run over jobs)."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the records here."),
    plot: Path | None = typer.Option(None, "--plot", help="Write cost-quality curves (PNG)."),
    train_file: Path | None = typer.Option(
        None, "--train-file", help="Labelled JSONL to train on (synthetic, transfer)."
    ),
    filters: str | None = typer.Option(
        None,
        "--filter",
        help="With --train-file: train only on rows passing these generator-quality "
        "filters (self-consistent, discriminative; comma-separated).",
    ),
    test_file: Path | None = typer.Option(
        None,
        "--test-file",
        help="Labelled JSONL to test on (implies --setting transfer); cost is re-normalised "
        "over the pool both sources share.",
    ),
    shots: str = typer.Option(
        "0,10,25,50,100",
        "--shots",
        help="Few-shot setting: labelled rows K of the held-out task, comma-separated; "
        "'all' = every train row of the task.",
    ),
    curve: Path | None = typer.Option(
        None, "--curve", help="Few-shot setting: write the learning curve (PNG) here."
    ),
    param: list[str] = typer.Option(
        [], "--param", help="Router hyper-parameter router.key=value (repeatable)."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="At most N rows per split (deterministic), for quick runs."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    label_budget: str = typer.Option(
        "0",
        "--label-budget",
        help="Online: background labels, N (over the stream), N/WINDOW (in the first "
        "WINDOW queries) or NperM (a rate: N per M queries, accruing); comma-separated.",
    ),
    feedback_rate: float = typer.Option(
        1.0, "--feedback-rate", min=0.0, max=1.0, help="Online: share of served queries scored."
    ),
    feedback_noise: float = typer.Option(
        0.0,
        "--feedback-noise",
        min=0.0,
        max=1.0,
        help="Online: share of scores that are wrong.",
    ),
    feedback_delay: int = typer.Option(
        0, "--feedback-delay", min=0, help="Online: events arrive N queries late."
    ),
    base: str = typer.Option("auto", "--base", help="Online: the base router, or none."),
    max_stream: int | None = typer.Option(
        None, "--max-stream", min=1, help="Online: replay at most N rows per stream."
    ),
    tasks: str | None = typer.Option(None, "--tasks", help="Online: stream only these tasks."),
    change: str | None = typer.Option(
        None,
        "--change",
        help="Online: score-drop[:MODEL]@T, price-drop[:MODEL]@T or new-model[:MODEL]@T "
        "(default: stationary).",
    ),
    change_models: int | None = typer.Option(
        None, "--change-models", min=1, help="Online: new-model@T runs the first N models."
    ),
) -> None:
    """Fit and score routers; print mean ± std over seeds per router and scenario."""
    from trouter.config import MalformedDataError
    from trouter.data.label_filters import parse_filters
    from trouter.data.suites import SUITES
    from trouter.evaluation.harness import run_experiment
    from trouter.evaluation.plots import plot_curves, plot_learning_curves
    from trouter.evaluation.report import rich_tables, summarise
    from trouter.evaluation.scenarios import resolve_scenarios

    if setting is Setting.online:  # replayed streams: see trouter.cli.eval_online
        from trouter.cli.eval_online import run_online_eval

        return run_online_eval(locals(), Console(width=200))
    if test_file is not None:
        setting = Setting.transfer
    if suite is None and not (setting is Setting.transfer and train_file is not None):
        raise typer.BadParameter("give --suite (or --train-file with --test-file)")
    if suite is not None and suite not in SUITES:
        raise typer.BadParameter(
            f"unknown suite {suite!r}; choose from {', '.join(SUITES)}", param_hint="--suite"
        )
    try:
        scenarios = resolve_scenarios(scenario)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--scenario") from err
    names = parse_routers(routers)
    params = parse_params(param, names)
    shot_list = parse_shots(shots)
    if setting is Setting.synthetic and train_file is None:
        raise typer.BadParameter("the synthetic setting needs --train-file")
    if setting is Setting.transfer and test_file is None:
        raise typer.BadParameter("the transfer setting needs --test-file")
    if setting is Setting.transfer and train_file is not None and suite is not None:
        raise typer.BadParameter("give one training source: --train-file or --suite")
    for option, path in (("--train-file", train_file), ("--test-file", test_file)):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} does not exist", param_hint=option)
    if filters and train_file is None:
        raise typer.BadParameter("--filter applies to --train-file only", param_hint="--filter")
    if curve is not None and setting is not Setting.few_shot:
        raise typer.BadParameter("--curve needs --setting few-shot", param_hint="--curve")

    console = Console()
    if not console.is_terminal:  # piped or captured: no width to fit, keep cells whole
        console = Console(width=180)
    try:
        records = run_experiment(
            suite,
            setting.value,
            names,
            scenarios,
            list(range(first_seed, first_seed + seeds)),
            train_file=train_file,
            train_filters=parse_filters(filters),
            router_params=params,
            progress=progress,
            limit=limit,
            shots=shot_list,
            test_file=test_file,
        )
    except (MalformedDataError, ValueError, KeyError) as err:  # missing data: exit 2 (cli)
        raise fail(str(err), 1) from err
    for table in rich_tables(summarise(records)):
        console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(_json_safe(records), indent=1))
        console.print(f"records: {json_path} ({len(records)})")
    if plot is not None:
        console.print(f"cost-quality curves: {plot_curves(records, plot)}")
    if curve is not None:
        console.print(f"learning curve: {plot_learning_curves(records, curve)}")
