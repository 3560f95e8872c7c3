"""The ``trouter`` command line. Each command group lives in its own module."""

from __future__ import annotations

import shutil
import textwrap

import typer

from trouter.cli import (
    data_cmd,
    eval_cmd,
    feedback_cmd,
    local_cmd,
    models_cmd,
    report_cmd,
    serve_cmd,
    synth_cmd,
    taxonomy_cmd,
    train_cmd,
)
from trouter.cli.surface import HELP_OPTION_NAMES, TrouterGroup, first_sentence

app = typer.Typer(
    help="trouter: task-aware LLM routing (evaluate, synthesise, train, route, serve).",
    no_args_is_help=True,
    cls=TrouterGroup,  # expected errors: one paragraph, exit 2; examples and flags in help
    context_settings={"help_option_names": HELP_OPTION_NAMES},
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"trouter {version('trouter')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print trouter's version and exit.",
    ),
) -> None:
    """trouter: task-aware LLM routing (evaluate, synthesise, train, route, serve)."""


for module in (
    data_cmd,
    eval_cmd,
    train_cmd,
    taxonomy_cmd,
    synth_cmd,
    serve_cmd,
    models_cmd,
    local_cmd,
    feedback_cmd,
    report_cmd,
):
    module.register(app)


@app.command("routers")
def list_routers() -> None:
    """List the registered routers, each with the first sentence of its description."""
    from trouter.routers import ROUTERS, make_router

    make_router("oracle")  # importing trouter.routers registers the built-ins
    width = max(len(name) for name in ROUTERS) + 2
    columns = max(shutil.get_terminal_size().columns, width + 40)
    for name in sorted(ROUTERS):
        text = first_sentence(ROUTERS[name].__doc__)
        lines = textwrap.wrap(text, columns - width) or [""]
        typer.echo(f"{name:{width}s}{lines[0]}")
        for line in lines[1:]:
            typer.echo(" " * width + line)
