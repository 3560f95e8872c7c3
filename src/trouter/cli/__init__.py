"""The ``trouter`` command line. Each command group lives in its own module."""

from __future__ import annotations

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
from trouter.cli.errors import ExpectedErrorsGroup

app = typer.Typer(
    help="trouter: task-aware LLM routing (evaluate, synthesise, train, route, serve).",
    no_args_is_help=True,
    cls=ExpectedErrorsGroup,  # expected errors: one paragraph, exit 2, no traceback
    pretty_exceptions_enable=False,
)
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
    """List the registered router names."""
    from trouter.routers import ROUTERS, make_router

    make_router("oracle")  # importing trouter.routers registers the built-ins
    for name in sorted(ROUTERS):
        doc = (ROUTERS[name].__doc__ or "").strip().splitlines()
        typer.echo(f"{name:16s} {doc[0] if doc else ''}")
