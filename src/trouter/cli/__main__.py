"""``python -m trouter.cli``: the command line."""

from trouter.cli import app

app(prog_name="trouter")
