"""The progress bars of the long-running commands, in one style."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def stage_bars(console: Console, label_width: int = 18) -> Progress:
    """Bars for a command of named stages: label, bar, done/total, elapsed."""
    return Progress(
        TextColumn(f"{{task.description:<{label_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
