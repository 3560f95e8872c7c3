"""Reading a router directory's files as untrusted input.

Only regular files are read: a file is opened without following a final symbolic link and
without blocking (a FIFO would otherwise wait for a writer), and its type and size come from
the open descriptor, so the file checked is the file read; a file over its cap is refused
before it is read. JSON nesting is bounded, so a deeply nested file is a clear error rather
than a RecursionError, and every later recursive walk of the document is safe.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from trouter.config import MalformedDataError

MIB = 2**20
#: Router states nest a few levels (a guard's members' network weights are 5 deep).
MAX_JSON_DEPTH = 64


class RouterFileError(MalformedDataError):
    """A router directory, or one of its files, is missing, damaged or not a trouter router."""


def lstat_entry(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise RouterFileError(f"{path} is missing (listed in router.json)") from None
    except OSError as err:
        raise RouterFileError(f"cannot read {path}: {err.strerror or err}") from None


def read_file(path: Path, cap: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link) of at most ``cap`` bytes.

    Opened without following a final symbolic link and without blocking (a FIFO would
    otherwise wait for a writer); the type and size come from the open descriptor, so the
    file checked is the file read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RouterFileError(f"{path} is missing (listed in router.json)") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise RouterFileError(
                f"{path} is a symbolic link; router files must be regular files in the "
                "directory (a link could point anywhere, such as a device)"
            ) from None
        raise RouterFileError(f"cannot read {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RouterFileError(f"{path} is not a regular file (a FIFO, socket or device)")
        if info.st_size > cap:
            raise RouterFileError(
                f"{path} is {info.st_size:,} bytes, more than the {cap:,} a router's "
                f"{path.name} may have; it is not a router file"
            )
        data = handle.read(cap + 1)
    if len(data) > cap:  # it grew while being read
        raise RouterFileError(f"{path} grew past {cap:,} bytes while being read")
    return data


def parse_json(data: bytes, path: Path) -> Any:
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_constant)
    except RecursionError:
        raise RouterFileError(
            f"{path}: JSON nested deeper than the parser allows (router files nest a few "
            "levels); not a router file"
        ) from None
    except UnicodeDecodeError as err:
        raise RouterFileError(
            f"{path}: not UTF-8 text (byte offset {err.start}); damaged or not a router file"
        ) from None
    except json.JSONDecodeError as err:
        raise RouterFileError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "the file is damaged or truncated"
        ) from None
    if _depth(document) > MAX_JSON_DEPTH:
        raise RouterFileError(
            f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep (router files nest "
            "a few levels); not a router file"
        )
    return document


def _depth(document: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (stops counting past the cap)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list) and level <= MAX_JSON_DEPTH + 1:
            deepest = max(deepest, level)
            stack.extend((item, level + 1) for item in _children(value))
    return deepest


def _children(value: dict | list) -> Any:
    return value.values() if isinstance(value, dict) else value


def _constant(name: str) -> float:
    # json writes NaN / Infinity for non-finite floats (an all-masked validation loss)
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]
