"""``python -m trouter``: the command line."""

from trouter.cli import app

app(prog_name="trouter")
