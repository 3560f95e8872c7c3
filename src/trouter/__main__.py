"""``python -m trouter``: the CLI."""

from trouter.cli import app

app()
