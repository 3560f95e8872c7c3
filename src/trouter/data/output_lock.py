"""One writer per output file: an exclusive lock beside it, naming the process that holds it.

Two ``trouter label --out same.jsonl`` runs used to both pay for every call and interleave
their rows. :func:`exclusive_output` takes a non-blocking lock on ``<file>.lock`` (a kernel
lock via :mod:`filelock`, released by the OS when the process dies, so a killed run never
leaves a stale lock) and records the holder's pid in ``<file>.lock.owner``; a second run
fails at once with :class:`OutputLockedError` naming that pid.

Re-entrant within one thread: the CLI takes the lock before it resolves pools and reads
files, and the library functions it then calls take it again without blocking themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

_HELD: dict[tuple[int, str], tuple[FileLock, int]] = {}
_GUARD = threading.Lock()


class OutputLockedError(RuntimeError):
    """Another process is writing the same output file."""


def lock_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".lock"), path.with_name(path.name + ".lock.owner")


def _holder(owner_file: Path) -> str:
    try:
        owner = json.loads(owner_file.read_text(encoding="utf-8"))
        started = time.strftime("%H:%M:%S", time.localtime(owner["started"]))
        return f"pid {owner['pid']} on {owner['host']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process whose pid is not recorded yet"


@contextmanager
def exclusive_output(path: str | Path) -> Iterator[None]:
    """Hold the exclusive write lock on ``path`` for the block, or raise OutputLockedError."""
    path = Path(path).resolve()
    # re-entrant per thread only: another thread of this process is another writer
    key = (threading.get_ident(), str(path))
    lock_file, owner_file = lock_paths(path)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            _HELD[key] = (held[0], held[1] + 1)
    if held is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_file, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise OutputLockedError(
                f"{path} is being written by another trouter run ({_holder(owner_file)}); "
                f"wait for it to finish or stop it. Two runs on one file would pay twice "
                f"and interleave rows. (Lock: {lock_file})"
            ) from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        with contextlib.suppress(OSError):  # the lock holds without it; messages lose the pid
            owner_file.write_text(json.dumps(owner), encoding="utf-8")
        with _GUARD:
            _HELD[key] = (lock, 1)
    try:
        yield
    finally:
        with _GUARD:
            lock, count = _HELD[key]
            if count > 1:
                _HELD[key] = (lock, count - 1)
            else:
                del _HELD[key]
                owner_file.unlink(missing_ok=True)
                lock.release()
