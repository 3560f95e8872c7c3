"""`trouter experiment local-pool`: build (or resume) the local-pool routing benchmark.

Long-running by design (hours on a 2-core CPU): every stage appends its rows as they
complete and resumes from them, so it can run in the background across sessions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def local_pool(
    stage: str = typer.Argument(
        ..., help="real (answer + grade real questions) | synthetic (generate + answer) | export"
    ),
    out: Path = typer.Option(Path("results/local-pool"), "--out", help="Release folder."),
    pool: Path | None = typer.Option(
        None, "--pool", help="Running servers (pool YAML); default: start the offline pool."
    ),
    in_flight: int = typer.Option(1, "--in-flight", min=1, help="Calls in flight at once."),
    n_gsm8k: int = typer.Option(236, "--gsm8k", min=0, help="GSM8K test questions."),
    n_humaneval: int = typer.Option(164, "--humaneval", min=0, help="HumanEval problems."),
    per_leaf: int = typer.Option(16, "--per-leaf", min=1, help="Synthetic questions per leaf."),
) -> None:
    """Build the local-pool benchmark release; resumable at any point."""
    from trouter.local.benchmark import build_real, export_real
    from trouter.local.pool import DEFAULT_GENERATOR, make_client, resolve_pool
    from trouter.local.synthetic import build_synthetic
    from trouter.taxonomy.model import Taxonomy

    if stage == "export":
        counts = export_real(out, n_gsm8k, n_humaneval)
        console.print(f"real.jsonl: {counts['complete_rows']} complete rows", highlight=False)
        return
    if stage not in ("real", "synthetic"):
        console.print(f"[red]error:[/red] unknown stage {stage!r}; choose real, synthetic, export")
        raise typer.Exit(2)
    with resolve_pool(pool) as running_pool, _bars() as bars:
        client = make_client(running_pool)
        if stage == "real":
            total = (n_gsm8k + n_humaneval) * len(running_pool.models)
            task = bars.add_task("real questions", total=total)
            counts = asyncio.run(
                build_real(client, running_pool, out, n_gsm8k, n_humaneval, in_flight=in_flight,
                           on_answer=lambda: bars.advance(task))
            )  # fmt: skip
        else:
            counts = asyncio.run(
                build_synthetic(client, running_pool, DEFAULT_GENERATOR, Taxonomy.default(), out,
                                per_leaf=per_leaf, in_flight=in_flight,
                                announce=lambda text: bars.console.print(text, highlight=False))
            )  # fmt: skip
    console.print(f"{stage}: {counts}", highlight=False)


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def register(experiment_app: typer.Typer) -> None:
    experiment_app.command("local-pool")(local_pool)
