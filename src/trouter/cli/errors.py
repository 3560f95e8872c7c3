"""One place where the CLI turns expected failures into a short message and exit code 2.

Expected failures are the ones a user causes or can fix (missing or malformed data, a
model that is not fetched, a bad pool file, a full disk ...): they print one paragraph,
never a traceback. Anything else is a bug and keeps its (plain, not Rich) traceback.
"""

from __future__ import annotations

import errno
import sys

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

EXPECTED_EXIT_CODE = 2

#: Error types of other modules that carry a user-facing message, by module and class name.
#: Looked up in ``sys.modules`` only: an error of a module never imported cannot occur, and
#: the handler must not import heavy modules (LiteLLM, torch) to find out.
EXPECTED_TYPES = (
    ("trouter.llm.pool", "PoolConfigError"),
    ("trouter.llm.pool", "MissingAPIKeyError"),
    ("trouter.local.fetch", "ModelFetchError"),
    ("trouter.local.server", "LocalServerError"),
    ("trouter.synthesis.checkpoint", "CheckpointError"),
    ("trouter.synthesis.qa", "QAFileError"),
    ("trouter.taxonomy.model", "TaxonomyError"),
    ("trouter.taxonomy.inputs", "TaxonomyBuildError"),
    ("trouter.serving.api", "PoolMismatchError"),
    ("trouter.cli.train_cmd", "InputError"),
    ("trouter.data.output_lock", "OutputLockedError"),
    ("trouter.data.jsonl", "OutputWriteError"),
    ("filelock", "Timeout"),
)
#: OS errors that mean "the machine or a path is not as the command needs", not a bug.
EXPECTED_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENOENT,
                   errno.EISDIR, errno.ENOTDIR, errno.EADDRINUSE}  # fmt: skip


def _expected_types() -> tuple[type[BaseException], ...]:
    from trouter.config import TrouterError

    found: list[type[BaseException]] = [TrouterError]
    for module_name, class_name in EXPECTED_TYPES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def user_message(err: BaseException) -> str | None:
    """The one-paragraph message for an expected error, None for anything else."""
    if isinstance(err, _expected_types()):
        return str(err) or type(err).__name__
    if isinstance(err, OSError) and err.errno in EXPECTED_ERRNOS:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    if isinstance(err, ModuleNotFoundError) and err.name:
        from trouter.extras import missing_extra_message

        return missing_extra_message(err.name, "this command")  # None: not an extra's module
    return None


def fail(message: str, code: int = EXPECTED_EXIT_CODE) -> typer.Exit:
    """Print ``error: message`` to stderr as plain text (a path with brackets is not Rich
    markup) and return the exit for the caller to raise: every command's one way out."""
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error: ", "red"), message))
    return typer.Exit(code)


class ExpectedErrorsGroup(TyperGroup):
    """The root command group: expected errors of any subcommand exit 2 with a message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - re-raised unless it is an expected error
            if user_message(err) is None:
                raise
            raise fail(str(user_message(err))) from None
