"""Download the public data files (``trouter data fetch``): pinned, checksummed, resumable.

Each file goes to ``<name>.part`` beside its target, resumes from the bytes already there
with an HTTP ``Range`` request (a server that ignores it sends the whole file and the part
starts over), is checked against the size and SHA-256 in :mod:`trouter.data.sources`, and
only then renamed over the target. A file that fails the check is deleted and named in
the error. A lock per target file (under ``.fetch-locks/``) keeps two fetches from writing the same
file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from filelock import FileLock

from trouter.config import TrouterError
from trouter.data.sources import SUITE_PREFIXES, DataFile, suite_files

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
LOCKS = ".fetch-locks"


class DataFetchError(TrouterError):
    """A download failed or a file failed verification (the message names each file)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(root: Path, item: DataFile) -> bool:
    target = root / item.path
    return (
        target.is_file()
        and target.stat().st_size == item.size
        and (sha256_of(target) == item.sha256)
    )


@dataclass
class FetchReport:
    downloaded: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one message per file


def resolve_names(names: Iterable[str], everything: bool) -> list[str]:
    chosen = list(SUITE_PREFIXES) if everything else list(dict.fromkeys(names))
    for name in chosen:
        suite_files(name)  # KeyError naming the choices
    return chosen


def _download(client: httpx.Client, url: str, part: Path, on_bytes: Callable[[int], None]) -> None:
    """Append to ``part`` from where it stops; start over if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    # identity: the bytes as stored (the checksum is of those), also what Range counts
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # the part is already complete (or longer)
            return
        response.raise_for_status()
        resumed = have and response.status_code == 206
        if have and not resumed:
            on_bytes(-have)
        with part.open("ab" if resumed else "wb") as out:
            for chunk in response.iter_raw():  # as received, so an interruption keeps them
                out.write(chunk)
                on_bytes(len(chunk))
            out.flush()
            os.fsync(out.fileno())


def _fetch_one(
    client: httpx.Client, root: Path, item: DataFile, mirror: str | None, on_bytes
) -> str | None:
    """Download and verify one file; returns an error message, or None when it is in place."""
    target = root / item.path
    part = target.with_name(target.name + ".part")
    url = item.mirror_url(mirror) if mirror else item.url
    if part.exists() and part.stat().st_size > item.size:
        part.unlink()
    on_bytes(part.stat().st_size if part.exists() else 0)
    try:
        _download(client, url, part, on_bytes)
    except httpx.HTTPStatusError as err:
        return f"{item.path}: {url} answered HTTP {err.response.status_code}"
    except httpx.HTTPError as err:
        return (
            f"{item.path}: download from {url} failed ({type(err).__name__}: {err}); "
            "run the command again to resume"
        )
    size = part.stat().st_size
    digest = sha256_of(part)
    if size != item.size or digest != item.sha256:
        part.unlink()
        return (
            f"{item.path}: refused and deleted: {size} bytes with SHA-256 {digest}, expected "
            f"{item.size} bytes with SHA-256 {item.sha256} (tampered, truncated or a "
            "different version)"
        )
    os.replace(part, target)
    return None


def fetch(
    names: Iterable[str],
    root: Path,
    mirror: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FetchReport:
    """Fetch every file of the data sets ``names`` into ``root`` (see :func:`fetch_files`)."""
    files = {f.path: f for name in names for f in suite_files(name)}
    return fetch_files(list(files.values()), root, mirror, progress)


def fetch_files(
    files: list[DataFile],
    root: Path,
    mirror: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FetchReport:
    """Fetch each file into ``root`` unless it is already there and verified.

    ``progress(done_bytes, total_bytes)`` is called as bytes arrive. Raises
    :class:`DataFetchError` listing every file that failed, after trying all of them.
    """
    report = FetchReport()
    todo = []
    for item in files:
        if is_verified(root, item):
            report.already_present.append(item.path)
        else:
            todo.append(item)
    total = sum(f.size for f in todo)
    done = 0

    def on_bytes(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total)

    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        for item in todo:
            target = root / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            start = done
            lock = root / LOCKS / f"{item.path}.lock"  # kept apart: never read as data
            lock.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(lock):
                # another fetch may have finished this file while we waited for the lock
                error = (
                    None
                    if is_verified(root, item)
                    else _fetch_one(client, root, item, mirror, on_bytes)
                )
            done = start + item.size
            if progress:
                progress(done, total)
            (report.failed if error else report.downloaded).append(error or item.path)
    if report.failed:
        raise DataFetchError(
            f"{len(report.failed)} of {len(files)} file(s) not fetched into {root}: "
            + "; ".join(report.failed)
        )
    return report
