"""``trouter synth taxonomy`` and ``trouter synth qa``: the generating half of cold start.

Both commands take the generator as a model name from a pool YAML, show progress bars with
a running dollar total, estimate calls and cost with ``--dry-run``, and stop cleanly with
exit code 3 when ``--max-cost`` is reached (finished work stays on disk; a rerun resumes).
Wired into the ``synth`` sub-app by :func:`register`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBars

from trouter.cli.errors import fail
from trouter.cli.options import default_pool_model
from trouter.synthesis.budget import BudgetExceededError, CostMeter

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
#: ``synth qa --taxonomy default``: the packaged taxonomy (a file of that name: ``./default``).
DEFAULT_TAXONOMY = "default"

console = Console(stderr=True)


class BarProgress:
    """:class:`trouter.synthesis.budget.Progress` drawn as rich bars with the running cost."""

    def __init__(self, bars: RichBars, meter: CostMeter) -> None:
        self.bars = bars
        self.meter = meter
        self.tasks: dict[str, Any] = {}
        meter.on_update = self._refresh

    def stage(self, name: str, total: int) -> None:
        self.tasks[name] = self.bars.add_task(name, total=total, spent=self._spent())

    def advance(self, name: str, amount: int = 1) -> None:
        self.bars.advance(self.tasks[name], amount)

    def note(self, message: str) -> None:
        self.bars.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def _spent(self) -> str:
        return f"${self.meter.spent_usd:.4f} / {self.meter.calls} calls"

    def _refresh(self, _meter: CostMeter) -> None:
        for task in self.tasks.values():
            self.bars.update(task, spent=self._spent())


def _bars() -> RichBars:
    return RichBars(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[spent]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def holds_output_lock(command: Callable[..., None]) -> Callable[..., None]:
    """Run a command holding ``--out``'s exclusive write lock (``synth qa``, ``label``).

    The lock is taken before anything else, so a second run on the same file exits 2 at
    once, naming the process that holds it. A ``--dry-run`` only reads, so it takes none.
    """

    @functools.wraps(command)
    def locked(**options: Any) -> None:
        from trouter.data.output_lock import OutputLockedError, exclusive_output

        if options.get("dry_run"):
            return command(**options)
        try:
            with exclusive_output(options["out"]):
                return command(**options)
        except OutputLockedError as err:
            raise fail(str(err), EXIT_USAGE) from None

    return locked


def _generator(pool_path: Path | None, name: str | None) -> tuple[Any, Any]:
    """The pool entry called ``name`` and the pool, with errors naming file and model.
    Without ``--generator``: the offline Qwen-1.5B when no ``--pool`` is given, else the
    pool's model (:func:`~trouter.cli.options.default_pool_model`). Without ``--pool``
    the offline local pool runs for the command's duration."""
    from trouter.local.pool import DEFAULT_GENERATOR, command_pool

    try:
        pool = command_pool(pool_path)
    except (OSError, ValueError, RuntimeError) as err:
        raise fail(str(err), EXIT_FAILED) from None
    if pool_path is not None and name is None:
        try:
            name = default_pool_model(pool, "--generator", "generator")
        except ValueError as err:
            raise fail(str(err), EXIT_USAGE) from None
    try:
        return pool, pool.get(name or DEFAULT_GENERATOR)
    except KeyError as err:
        raise fail(str(err.args[0] if err.args else err), EXIT_FAILED) from None


def _price(endpoint: Any):
    def price(tokens_in: int, tokens_out: int) -> float | None:
        return endpoint.cost(tokens_in, tokens_out)

    return price


def taxonomy_command(
    generator: str | None = typer.Option(
        None,
        "--generator",
        help="Generator model (a pool name); default: the --pool's only or most expensive "
        "model, or the offline Qwen-1.5B without --pool.",
    ),
    pool: Path | None = typer.Option(
        None, "--pool", help="Pool YAML that defines the generator; default: the offline pool."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the taxonomy JSON."),
    domain: list[str] = typer.Option(
        [], "--domain", help='A domain to include, "Name: definition" (repeatable).'
    ),
    examples: Path | None = typer.Option(
        None, "--examples", help="Unlabelled example queries (text lines or JSONL) to cover."
    ),
    max_domains: int = typer.Option(10, help="Most domains."),
    max_subcategories: int = typer.Option(10, help="Most subcategories per domain."),
    max_difficulties: int = typer.Option(5, help="Most difficulty levels per subcategory."),
    preferences: bool = typer.Option(False, "--preferences", help="Add user-preference nodes."),
    max_rounds_upper: int = typer.Option(10, help="Round cap for domains and subcategories."),
    max_rounds_lower: int = typer.Option(5, help="Round cap for difficulties and preferences."),
    seed: int = typer.Option(0, help="Seed of the choose step's order randomisation."),
    name: str = typer.Option("synthesized", help="Name stored in the taxonomy file."),
    max_cost: float | None = typer.Option(None, "--max-cost", help="Stop at this many USD."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate calls and cost only."),
) -> None:
    """Build a task taxonomy with the generator LLM (resumes from OUT.progress.json)."""
    from trouter.llm.client import LLMError
    from trouter.synthesis.estimate import estimate_taxonomy
    from trouter.synthesis.llmjson import MalformedOutputError
    from trouter.taxonomy.builder import (
        BuildSettings,
        TaxonomyBuildError,
        abuild_taxonomy,
    )
    from trouter.taxonomy.inputs import load_example_queries, parse_domain_arg

    _, endpoint = _generator(pool, generator)
    try:
        profiles = [parse_domain_arg(d) for d in domain]
        queries = load_example_queries(examples) if examples else []
        settings = BuildSettings(
            max_domains=max_domains,
            max_subcategories=max_subcategories,
            max_difficulties=max_difficulties,
            include_preferences=preferences,
            max_rounds_upper=max_rounds_upper,
            max_rounds_lower=max_rounds_lower,
            seed=seed,
        )
        settings.check()
    except TaxonomyBuildError as err:
        raise fail(str(err), EXIT_FAILED) from None
    if dry_run:
        n_domains = len(profiles) if profiles and not queries else max_domains
        estimate = estimate_taxonomy(
            n_domains=n_domains,
            max_subcategories=max_subcategories,
            max_difficulties=max_difficulties,
            include_preferences=preferences,
            max_rounds_upper=max_rounds_upper,
            max_rounds_lower=max_rounds_lower,
            price=_price(endpoint),
        )
        for line in estimate.lines():
            typer.echo(line)
        return
    checkpoint = out.with_name(out.name + ".progress.json")
    meter = CostMeter(max_cost_usd=max_cost)
    records: list[Any] = []
    with _bars() as bars:
        progress = BarProgress(bars, meter)
        try:
            taxonomy = _run(
                abuild_taxonomy(
                    _client(endpoint),
                    endpoint,
                    domains=profiles,
                    example_queries=queries,
                    settings=settings,
                    name=name,
                    meter=meter,
                    progress=progress,
                    checkpoint=checkpoint,
                    records=records,
                )
            )
        except BudgetExceededError as err:
            kept = f" (progress kept in {checkpoint})" if checkpoint.exists() else ""
            raise fail(f"{err}{kept}", EXIT_BUDGET) from None
        except (TaxonomyBuildError, MalformedOutputError, LLMError) as err:
            kept = f" (finished node sets kept in {checkpoint})" if checkpoint.exists() else ""
            raise fail(f"{err}{kept}", EXIT_FAILED) from None
    taxonomy.save(out)
    checkpoint.unlink(missing_ok=True)
    leaves = taxonomy.leaves()
    if records:
        rounds = sum(r.rounds for r in records) / len(records)
        unstable = [r.label for r in records if not r.converged]
        typer.echo(
            f"{len(records)} node sets refined, {rounds:.1f} rounds on average"
            + (f"; stopped at the round cap: {', '.join(unstable)}" if unstable else "")
        )
    typer.echo(
        f"wrote {out}: {len(taxonomy.domains)} domains, {len(leaves)} leaves; {meter.summary()}"
    )


@holds_output_lock
def qa_command(
    taxonomy: Path = typer.Option(
        ...,
        "--taxonomy",
        help=f'Taxonomy JSON (from synth taxonomy), or "{DEFAULT_TAXONOMY}" for the packaged '
        "one (`trouter taxonomy show`).",
    ),
    generator: str | None = typer.Option(
        None,
        "--generator",
        help="Generator model (a pool name); default: the --pool's only or most expensive "
        "model, or the offline Qwen-1.5B without --pool.",
    ),
    pool: Path | None = typer.Option(
        None, "--pool", help="Pool YAML that defines the generator; default: the offline pool."
    ),
    out: Path = typer.Option(..., "--out", help="QA JSONL to write (appended; resumes)."),
    per_leaf: int = typer.Option(40, "--per-leaf", min=1, help="Questions kept per leaf."),
    per_call: int = typer.Option(8, "--per-call", min=1, help="Questions asked for per call."),
    dedup_threshold: float = typer.Option(
        0.9, min=-1.0, max=1.0, help="Reject above this cosine similarity."
    ),
    max_calls_per_leaf: int | None = typer.Option(
        None, min=1, help="Give up on a leaf after this."
    ),
    stall_calls: int | None = typer.Option(
        None, min=1, help="Give up on a leaf after this many calls in a row keep nothing."
    ),
    leaves_limit: int | None = typer.Option(
        None, "--leaves-limit", min=1, help="Only the first N."
    ),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0.0, help="Stop at this many USD."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Estimate calls and cost only."),
) -> None:
    """Generate deduplicated question-answer pairs for every taxonomy leaf."""
    from trouter.data.jsonl import OutputWriteError
    from trouter.llm.client import LLMError
    from trouter.synthesis.estimate import estimate_qa
    from trouter.synthesis.qa import QAFileError, asynthesize_qa, default_max_calls
    from trouter.taxonomy.model import Taxonomy, TaxonomyError

    try:
        tax = Taxonomy.default() if str(taxonomy) == DEFAULT_TAXONOMY else Taxonomy.load(taxonomy)
    except TaxonomyError as err:
        raise fail(str(err), EXIT_FAILED) from None
    _, endpoint = _generator(pool, generator)
    leaf_ids = tax.leaf_ids()[:leaves_limit] if leaves_limit else tax.leaf_ids()
    max_calls = max_calls_per_leaf or default_max_calls(per_leaf, per_call)
    if dry_run:
        estimate = estimate_qa(
            n_leaves=len(leaf_ids),
            per_leaf=per_leaf,
            per_call=per_call,
            max_calls_per_leaf=max_calls,
            price=_price(endpoint),
        )
        for line in estimate.lines():
            typer.echo(line)
        return
    meter = CostMeter(max_cost_usd=max_cost)
    with _bars() as bars:
        try:
            report = _run(
                asynthesize_qa(
                    _client(endpoint),
                    endpoint,
                    tax,
                    out_path=out,
                    per_leaf=per_leaf,
                    per_call=per_call,
                    dedup_threshold=dedup_threshold,
                    max_calls_per_leaf=max_calls,
                    stall_calls=stall_calls,
                    leaf_ids=leaf_ids,
                    meter=meter,
                    progress=BarProgress(bars, meter),
                )
            )
        except BudgetExceededError as err:
            raise fail(f"{err} (rows so far are in {out})", EXIT_BUDGET) from None
        except (QAFileError, LLMError) as err:
            raise fail(f"{err} (rows so far are in {out})", EXIT_FAILED) from None
        except OutputWriteError as err:
            raise fail(str(err), EXIT_FAILED) from None
    kept = sum(r.kept for r in report.leaves)
    typer.echo(
        f"wrote {out}: {report.added} new rows, {kept} in total over {len(report.leaves)} "
        f"leaves; {meter.summary()}"
    )
    if report.given_up:
        typer.echo(
            f"{len(report.given_up)} leaves short of {per_leaf}: "
            + ", ".join(f"{r.leaf_id} ({r.kept})" for r in report.given_up)
        )


def _client(endpoint: Any) -> Any:
    from trouter.local.pool import make_client

    return make_client(endpoint)  # long timeouts when the endpoint is a local server


def _run(coroutine: Any) -> Any:
    from trouter.local.server import run_watched

    return run_watched(coroutine)  # a local server that dies ends the command at once


def register(synth_app: typer.Typer) -> None:
    """Add ``taxonomy`` and ``qa`` to the ``synth`` sub-app."""
    synth_app.command("taxonomy")(taxonomy_command)
    synth_app.command("qa")(qa_command)
