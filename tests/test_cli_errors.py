"""The CLI's one error path: expected failures are one paragraph and exit 2, bugs are not hidden."""

from __future__ import annotations

import errno

import pytest
import typer
from typer.testing import CliRunner

from trouter.cli import app
from trouter.cli.errors import ExpectedErrorsGroup, user_message
from trouter.config import DataNotFoundError


def test_os_errors_that_a_user_can_fix_are_expected() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl")
    assert user_message(full) == "No space left on device: /data/out.jsonl"
    assert user_message(DataNotFoundError("x is missing")) == "x is missing"
    assert user_message(ZeroDivisionError("bug")) is None
    assert user_message(OSError(errno.EIO, "I/O error")) is None


def _app_raising(err: Exception) -> typer.Typer:
    broken = typer.Typer(cls=ExpectedErrorsGroup, pretty_exceptions_enable=False)

    @broken.command()
    def run() -> None:
        raise err

    @broken.command()
    def other() -> None:
        pass

    return broken


def test_expected_error_exits_2_and_a_bug_keeps_its_exception() -> None:
    result = CliRunner().invoke(_app_raising(OSError(errno.ENOSPC, "No space left", "f")), ["run"])
    assert result.exit_code == 2 and "error: No space left: f" in result.output
    result = CliRunner().invoke(_app_raising(ZeroDivisionError("a bug")), ["run"])
    assert isinstance(result.exception, ZeroDivisionError)


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"]])
def test_help_still_exits_0(args) -> None:
    assert CliRunner().invoke(app, args).exit_code == 0
