"""``python -m trouter.cli``: the same as the ``trouter`` command."""

from trouter.cli import app

app()
