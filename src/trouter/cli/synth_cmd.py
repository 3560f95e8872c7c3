"""The cold-start data commands: the ``synth`` sub-app and the top-level ``label`` command.

``synth`` generation commands (``synth taxonomy``, ``synth qa``) are added to
:data:`synth_app`; ``trouter label`` turns their questions into labelled training data.

Exit codes of ``label``: 0 done, 1 fatal error (bad file, unknown model, unset API key,
every call failing, output not writable), 2 usage error (typer; another run holds --out),
3 stopped by ``--max-cost`` (finished questions
are written; rerunning with a higher ceiling resumes where it stopped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trouter.cli.errors import fail
from trouter.cli.options import comma_list, default_pool_model
from trouter.cli.synth_gen import EXIT_BUDGET, EXIT_FAILED, holds_output_lock

console = Console(stderr=True)

synth_app = typer.Typer(
    help="Cold-start synthesis: build a task taxonomy, generate questions per leaf.",
    no_args_is_help=True,
)


def _resolve(pool_path: Path | None, judge: str | None, models: str | None) -> tuple[list, Any]:
    """(answering endpoints, judge endpoint) from the pool, errors naming file and model.
    Without ``--judge``: the pool's model (:func:`~trouter.cli.options.default_pool_model`)
    with ``--pool``, else the offline Qwen-1.5B, whose local pool is then started for the
    command's duration."""
    from trouter.local.pool import DEFAULT_JUDGE, command_pool

    try:
        pool = command_pool(pool_path)
    except (ValueError, RuntimeError) as err:
        raise fail(str(err), EXIT_FAILED) from None
    if judge is None and pool_path is not None:
        try:
            judge = default_pool_model(pool, "--judge", "judge")
        except ValueError as err:
            raise fail(str(err), 2) from None
    judge = judge or DEFAULT_JUDGE
    names = comma_list(models) if models else pool.names
    try:
        return [pool.endpoint(n) for n in names], pool.endpoint(judge)
    except KeyError as err:
        raise fail(str(err.args[0]), EXIT_FAILED) from None


@holds_output_lock  # before anything else: a second run on --out refuses at once
def label_command(
    questions: Path = typer.Option(..., "--questions", help="QA JSONL from `trouter synth qa`."),
    pool: Path | None = typer.Option(
        None, "--pool", help="Pool YAML: the models that answer (default: the offline pool)."
    ),
    judge: str | None = typer.Option(
        None,
        "--judge",
        help="Pool model that scores the answers; default: the --pool's only or most "
        "expensive model, or the offline Qwen-1.5B without --pool.",
    ),
    out: Path = typer.Option(..., "--out", help="Labelled JSONL to write (appended, resumed)."),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated pool models that answer (default: all)."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0.0, help="Stop before spending more than this many USD."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate calls and cost only."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Concurrent LLM calls."),
    answer_max_tokens: int = typer.Option(1024, help="Longest answer a pool model may give."),
    assumed_answer_tokens: int = typer.Option(
        300, min=1, help="Answer length assumed by --dry-run and --max-cost projections."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds per call attempt (60; 1800 for local servers)."
    ),
    max_retries: int = typer.Option(5, "--max-retries", min=0, help="Retries per call."),
    filters: str | None = typer.Option(
        None,
        "--filter",
        help="Generator-quality filters, comma-separated: self-consistent (the generator, "
        "answering as a pool model, matches its reference), discriminative (the pool's scores "
        "differ). Failing rows go to OUT's .rejected.jsonl side file, not to OUT.",
    ),
) -> None:
    """Every pool model answers every question; the judge scores each answer 1 / 0.5 / 0."""
    from trouter.config import MalformedDataError
    from trouter.data.jsonl import OutputWriteError
    from trouter.data.label_filters import FilterError, check_generators, parse_filters
    from trouter.labelling.files import done_ids, read_questions
    from trouter.labelling.run import LabelSettings
    from trouter.llm.pool import MissingAPIKeyError
    from trouter.local.pool import make_client

    answering, judge_endpoint = _resolve(pool, judge, models)
    try:
        rows = read_questions(questions)
        chosen = parse_filters(filters)
        check_generators(rows, [m.name for m in answering], chosen)
    except MalformedDataError as err:
        raise fail(str(err), EXIT_FAILED) from None
    except FilterError as err:  # a wrong option, not a failed run
        raise fail(str(err), 2) from None
    settings = LabelSettings(
        max_cost_usd=max_cost,
        answer_max_tokens=answer_max_tokens,
        assumed_answer_tokens=assumed_answer_tokens,
        questions_in_flight=concurrency,
        filters=chosen,
    )
    timeouts = {"timeout_s": timeout} if timeout is not None else {}
    client = make_client(  # long timeouts for local servers (trouter.local.pool)
        [*answering, judge_endpoint],
        max_concurrency=concurrency,
        max_retries=max_retries,
        **timeouts,
    )
    try:  # a torn last line is repaired (and reported) by the run itself
        done, _ = done_ids(out, repair=False)
    except MalformedDataError as err:
        raise fail(f"cannot resume from {out}: {err}", EXIT_FAILED) from None
    if dry_run:
        _dry_run(client, answering, judge_endpoint, rows, done, out, settings)
        return
    for endpoint in {e.name: e for e in [*answering, judge_endpoint]}.values():
        try:
            endpoint.api_key()
        except MissingAPIKeyError as err:
            raise fail(str(err), EXIT_FAILED) from None
    todo = len(rows) - len([r for r in rows if r["id"] in done])
    try:
        report = _run_with_bars(client, answering, judge_endpoint, rows, out, settings, todo)
    except OutputWriteError as err:
        raise fail(str(err), EXIT_FAILED) from None
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    typer.echo(
        f"wrote {report.written} questions to {out} ({report.already_done} were already done, "
        f"{report.masked_cells} masked cells); {report.calls} calls "
        f"({report.cached_calls} from cache), ${report.spent_usd:.4f}"
        + (f", {report.unpriced_calls} calls without a price" if report.unpriced_calls else "")
    )
    if chosen:
        from trouter.data.label_filters import rejected_path

        typer.echo(
            f"filters {', '.join(chosen)}: {report.written - report.rejected} of "
            f"{report.written} new rows kept; {report.rejected} went to {rejected_path(out)}"
        )
    if report.failed:
        console.print(
            f"[yellow]warning:[/yellow] {report.failed} questions not written because every call "
            "for them failed; rerun to retry them",
            highlight=False,
        )
    if report.aborted:
        raise fail(report.aborted, EXIT_FAILED)
    if report.stopped_by_budget:
        raise fail(
            f"stopped: the next question or call could take spending past --max-cost "
            f"${max_cost:.6f} (spent ${report.spent_usd:.6f}); {report.abandoned} questions "
            "left undone. Rerun with a higher --max-cost to continue (finished calls are "
            "cached); a lower --answer-max-tokens lets more calls fit, since each is budgeted "
            "at its longest possible answer.",
            EXIT_BUDGET,
        )


def _run_with_bars(
    client: Any,
    answering: list[Any],
    judge: Any,
    rows: list[dict[str, Any]],
    out: Path,
    settings: Any,
    todo: int,
) -> Any:
    """Run :func:`trouter.labelling.run.alabel` under a Rich bar with the running $ total."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from trouter.labelling.run import alabel
    from trouter.local.server import run_watched

    bars = Progress(
        TextColumn("labelling"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[spent]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with bars:
        task = bars.add_task("labelling", total=todo, spent="$0.0000")

        def update(report: Any) -> None:
            bars.update(
                task,
                completed=report.written,
                spent=f"${report.spent_usd:.4f} | {report.calls} calls",
            )

        return run_watched(alabel(client, answering, judge, rows, out, settings, update))


def _dry_run(
    client: Any,
    answering: list[Any],
    judge: Any,
    rows: list[dict[str, Any]],
    done: set[str],
    out: Path,
    settings: Any,
) -> None:
    """Print the forecast of :func:`trouter.labelling.run.estimate`; spends nothing."""
    from trouter.labelling.forecast import estimate

    todo = [r for r in rows if r["id"] not in done]
    forecast = estimate(client, answering, judge, todo, settings)
    typer.echo(
        f"dry run: {forecast.questions} questions to label ({len(rows) - len(todo)} already in "
        f"{out}) with {len(answering)} models and judge {judge.name}\n"
        f"  {forecast.calls} calls to make ({forecast.cached_calls} more answered from cache)\n"
        f"  ~{forecast.input_tokens} input + ~{forecast.output_tokens} output tokens "
        f"(answers assumed {settings.assumed_answer_tokens} tokens)\n"
        f"  estimated cost ${forecast.cost_usd:.4f}"
    )
    if forecast.unpriced_models:
        typer.echo(f"  no price known for: {', '.join(forecast.unpriced_models)} (counted as $0)")


def register(app: typer.Typer) -> None:
    """Add the ``synth`` sub-app and the ``label`` command to the top-level app."""
    from trouter.cli import synth_gen

    synth_gen.register(synth_app)  # synth taxonomy, synth qa
    app.add_typer(synth_app, name="synth")
    app.command("label")(label_command)
