"""``trouter eval --setting online``: replay a labelled stream through online routers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown

from trouter.cli.errors import fail
from trouter.cli.options import comma_list, parse_params


def online_routers(spec: str) -> tuple[str, ...]:
    from trouter.evaluation.online import ALL_ROUTERS

    names = comma_list(spec) if spec else list(ALL_ROUTERS)
    unknown = [n for n in names if n not in ALL_ROUTERS]
    if unknown:
        raise typer.BadParameter(
            f"unknown online-setting router(s) {', '.join(unknown)}; choose from "
            f"{', '.join(ALL_ROUTERS)}",
            param_hint="--routers",
        )
    return tuple(dict.fromkeys(["best-single", "oracle", *names]))


def online_change(spec: str | None, models: int | None):
    """The ``--change`` value as a :class:`~trouter.evaluation.online_changes.Change`."""
    from trouter.evaluation.online_changes import parse_change

    try:
        change = parse_change(spec)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--change") from None
    if models is not None and (change is None or change.kind != "new-model" or change.model):
        raise typer.BadParameter(
            "--change-models bounds a new-model@T change that names no model",
            param_hint="--change-models",
        )
    return change


def run_online_eval(options: dict[str, Any], console: Console) -> None:
    """Run the replay described by ``options`` (the eval command's values) and report it."""
    from trouter.config import MalformedDataError
    from trouter.data.suites import load_suite
    from trouter.evaluation.harness import _load_labelled_file, limit_rows
    from trouter.evaluation.online import Feedback, OnlineConfig, run_online
    from trouter.evaluation.scenarios import resolve_scenarios
    from trouter.routers.online_labels import budget_size

    budgets = tuple(comma_list(options["label_budget"]))
    for spec in budgets:
        try:
            budget_size(spec, 1000)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--label-budget") from None
    feedback = Feedback(options["feedback_rate"], options["feedback_noise"],
                        options["feedback_delay"])  # fmt: skip
    try:
        spec = options["scenario"]
        scenarios = resolve_scenarios("balanced" if spec == "all" else spec)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--scenario") from err
    if len(scenarios) != 1:
        raise typer.BadParameter("the online setting replays one scenario at a time",
                                 param_hint="--scenario")  # fmt: skip
    ((scenario, weights),) = scenarios.items()
    change = online_change(options["change"], options["change_models"])
    config = OnlineConfig(
        base=options["base"], label_budgets=budgets, feedback=feedback,
        routers=online_routers(options["routers"]), max_stream=options["max_stream"],
        tasks=tuple(comma_list(options["tasks"] or "")), change=change,
        change_models=options["change_models"],
        online_params=parse_params(options["param"], ["online"]).get("online", {}),
    )  # fmt: skip
    if options["suite"] is None and options["test_file"] is None:
        raise typer.BadParameter("give --suite (or --test-file with --train-file or --suite)")
    seeds = list(range(options["first_seed"], options["first_seed"] + options["seeds"]))
    try:
        source = None
        if options["test_file"] is not None:
            dataset = _load_labelled_file(options["test_file"], options["limit"])
            train_file, limit = options["train_file"], options["limit"]
            if train_file is not None:
                source = _load_labelled_file(train_file, limit)
            else:
                source = limit_rows(load_suite(options["suite"], seed=seeds[0]), limit)
            suite = dataset.name
        else:
            dataset = limit_rows(load_suite(options["suite"], seed=seeds[0]), options["limit"])
            suite = options["suite"]
        if change is not None and change.model not in (None, *dataset.model_names):
            raise typer.BadParameter(
                f"{change.model!r} is not a model of {suite}; pool: "
                + ", ".join(dataset.model_names),
                param_hint="--change",
            )
        context = {"suite": suite, "setting": "online", "scenario": scenario,
                   "feedback": vars(feedback), "base": config.base}  # fmt: skip
        progress = options["progress"]

        def announce(seed: int, task: str, n: int) -> None:
            if progress:
                console.print(f"seed {seed} · streaming {task} ({n} rows)", style="dim")

        records = run_online(dataset, config, weights, seeds, context, source, announce)
    except (MalformedDataError, ValueError, KeyError) as err:
        raise fail(str(err), 1) from err
    _report(records, list(config.routers), budgets, options, console)


def _report(records: list[dict], routers: list[str], budgets: tuple[str, ...],
            options: dict[str, Any], console: Console) -> None:  # fmt: skip
    """The replay's tables, and its records and plots where the options ask for them."""
    from trouter.evaluation.online_report import markdown_tables, plot_streams, summarise

    console.print(Markdown(markdown_tables(summarise(records), routers)))
    if options["json_path"] is not None:
        path: Path = options["json_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_plain(records), indent=1, allow_nan=False))
        console.print(f"records: {path} ({len(records)})")
    if options["plot"] is not None:
        shown = [n for n in routers if n not in ("random",)]
        for spec in budgets:
            target = options["plot"]
            if len(budgets) > 1:
                safe = spec.replace("/", "-in-")
                target = target.with_name(f"{target.stem}_budget{safe}{target.suffix}")
            console.print(f"utility vs queries: {plot_streams(records, target, spec, shown)}")


def _plain(value: Any) -> Any:
    """Records as strict JSON values: numpy scalars as numbers, NaN as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
