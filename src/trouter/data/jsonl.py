"""Reading and appending the project's JSONL files; every error names file:line.

Reading: :func:`iter_json_objects` decodes line by line, so a file that is not UTF-8 (or a
row that is not a JSON object) is reported as ``file:line`` instead of a decoder traceback.
A line longer than :data:`MAX_LINE_BYTES` is refused the same way before it is read whole,
so one huge row cannot take the reader's memory.

Appending (``trouter label`` and ``trouter synth qa`` write results one line at a time):

- :func:`cut_torn_tail` removes a last line without its newline, which only a killed write
  leaves behind, so that the next append starts on a fresh line;
- :class:`JsonlAppender` writes each row as one ``write`` and, if that fails (a full disk),
  cuts the file back to its last complete line and raises :class:`OutputWriteError`, so the
  file never holds a torn row.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trouter.config import MalformedDataError

#: Longest line read from a JSONL file: one row (a question with every model's answer)
#: is far below it; a longer one is refused, naming its file and line.
MAX_LINE_BYTES = 16 * 1024**2


class OutputWriteError(OSError):
    """An output file could not be written (e.g. a full disk); it is intact up to its last
    complete line, so a rerun resumes from there."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def decode_line(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 text, or a MalformedDataError naming ``where`` and the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedDataError(
            f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "save the file as UTF-8"
        ) from None


def read_text(path: Path, what: str = "file", max_bytes: int | None = None) -> str:
    """A whole text file as UTF-8; a bad byte is reported as ``file:line``.

    With ``max_bytes``, a file larger than that is refused without reading the rest (also
    a device or a pipe, whose size is not known beforehand).
    """
    try:
        with path.open("rb") as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise MalformedDataError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise MalformedDataError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise MalformedDataError(f"{what} {path} is larger than {max_bytes:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        start = data.rfind(b"\n", 0, err.start) + 1
        raise MalformedDataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column "
            f"{err.start - start + 1}); save the {what} as UTF-8"
        ) from None


def iter_json_objects(
    path: Path, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yield ``(where, line_number, row)`` per non-blank line; ``where`` is ``file:line``.

    A line that is not UTF-8, not JSON, not a JSON object or longer than
    ``max_line_bytes`` raises :class:`MalformedDataError` naming it.
    """
    try:
        handle = path.open("rb")
    except OSError as err:
        raise MalformedDataError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        lines = iter(lambda: handle.readline(max_line_bytes + 1), b"")
        yield from _objects(lines, path, max_line_bytes)


def _objects(
    lines: Iterable[bytes], path: Path, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if len(raw.rstrip(b"\r\n")) > max_line_bytes:
            raise MalformedDataError(
                f"{where}: line longer than {max_line_bytes:,} bytes (one row never needs "
                "that much); remove or shorten it"
            )
        line = decode_line(raw, where)
        if line.strip():
            yield where, number, parse_object(line, where)


def parse_object(line: str, where: str) -> dict[str, Any]:
    """One JSONL line as a dict, or a MalformedDataError naming ``where``."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise MalformedDataError(f"{where}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise MalformedDataError(f"{where}: JSON nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts
        raise MalformedDataError(f"{where}: not usable JSON (a number too long to read)") from None
    if not isinstance(row, dict):
        raise MalformedDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def cut_torn_tail(path: Path, repair: bool = True) -> tuple[bytes, bool]:
    """(the file's complete lines, whether a torn last line was found).

    With ``repair`` the torn line is also cut off the file itself; callers must hold the
    file's exclusive lock (:func:`trouter.data.output_lock.exclusive_output`) to do so.
    """
    if not path.exists():
        return b"", False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return data, False
    keep = data.rfind(b"\n") + 1
    if repair:
        with path.open("r+b") as handle:
            handle.truncate(keep)
    return data[:keep], True


def complete_objects(
    path: Path, repair: bool = True
) -> tuple[list[tuple[str, int, dict[str, Any]]], bool]:
    """(``(where, line_number, row)`` per complete line, whether a torn last line was found).

    The resume reader of an append-only file: a torn last line is a killed write and is
    dropped (cut off the file too with ``repair``, which needs the file's lock); a damaged
    line anywhere else is not a crash artefact and raises :class:`MalformedDataError`.
    """
    data, torn = cut_torn_tail(path, repair)
    return list(_objects(data.splitlines(), path)), torn


class JsonlAppender:
    """Appends one JSON object per line, each in a single write, flushed to the OS at once.

    A failed write (ENOSPC, EIO, ...) is undone by truncating to the size before it, then
    raised as :class:`OutputWriteError` with one clean sentence: the file keeps only
    complete lines, and nothing already written is lost.

    A file replaced or removed under a long run (``git stash``/``checkout`` of a committed
    output, an editor's save) is reopened by path before the next row, so rows keep going
    to the file a reader sees instead of to an unlinked inode.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _reopen_if_replaced(self) -> None:
        mine = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(self._fd)
            self._open()

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self._reopen_if_replaced()
        except OSError as err:
            raise OutputWriteError(
                err.errno, f"cannot reopen {self.path}: {err.strerror or err}"
            ) from None
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as err:
            self._undo(size)
            raise OutputWriteError(
                err.errno,
                f"cannot write to {self.path}: {err.strerror or err}. The file is intact up "
                "to its last complete line; free space (or fix the error) and rerun to resume",
            ) from None

    def _undo(self, size: int) -> None:
        # if even this fails, nothing more can be done; the reader cuts a torn tail anyway
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # written rows are with the OS already; fsync failure loses no row here
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
