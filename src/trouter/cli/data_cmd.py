"""`trouter data`: fetch the public data releases (pinned, checksummed) and show what is there."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from trouter.cli.errors import fail

data_app = typer.Typer(help="Public routing data: fetch (verified) and list.", no_args_is_help=True)
console = Console(stderr=True)


def _root(directory: Path | None) -> Path:
    from trouter.config import data_dir

    return directory.expanduser() if directory else data_dir()


@data_app.command("fetch")
def fetch_command(
    names: list[str] = typer.Argument(
        None,
        help="Data sets: routerbench, llmrouter, routerdc, routellm-gsm8k, "
        "routellm-mmlu, routellm-mtbench, questions.",
    ),
    everything: bool = typer.Option(False, "--all", help="Fetch every data set."),
    mirror: str | None = typer.Option(
        None,
        "--mirror",
        help="Base URL laid out like the data directory, instead of the "
        "pinned public origins (for air-gapped machines).",
    ),
    directory: Path | None = typer.Option(
        None, "--dir", help="Where to put the files (default: the data directory)."
    ),
) -> None:
    """Download the files the suites read from their public origins, pinned to a commit;
    each file is checked against its SHA-256, written atomically, resumed if interrupted."""
    from trouter.data.fetch import fetch, resolve_names

    if not names and not everything:
        raise fail("name a data set (e.g. `trouter data fetch routerbench`) or pass --all")
    try:
        chosen = resolve_names(names or [], everything)
    except KeyError as err:
        raise fail(str(err.args[0])) from None
    root = _root(directory)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bars:
        task = bars.add_task(f"fetch {', '.join(chosen)}", total=None)
        report = fetch(
            chosen, root, mirror, progress=lambda done, total: bars.update(task, completed=done,
                                                                           total=total or 1),
        )  # fmt: skip
    console.print(
        f"{len(report.downloaded)} file(s) downloaded and verified, "
        f"{len(report.already_present)} already present and verified, in {root}",
        highlight=False,
    )


@data_app.command("list")
def list_command(
    directory: Path | None = typer.Option(None, "--dir", help="Data directory to inspect."),
) -> None:
    """Each data set: how many of its files are present in the data directory."""
    from trouter.data.sources import SUITE_PREFIXES, missing_files, suite_files

    root = _root(directory)
    table = Table("data set", "files present", "size (MB)", "fetch command", title=str(root))
    for name in SUITE_PREFIXES:
        files = suite_files(name)
        present = len(files) - len(missing_files(root, name))
        megabytes = sum(f.size for f in files) / 1e6
        command = "" if present == len(files) else f"trouter data fetch {name}"
        table.add_row(name, f"{present} / {len(files)}", f"{megabytes:.1f}", command)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
