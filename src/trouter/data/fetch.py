"""Download the public data files (``trouter data fetch``): pinned, checksummed, resumable.

Each file goes to ``<name>.part`` beside its target, resumes from the bytes already there
with an HTTP ``Range`` request (a server that ignores it sends the whole file and the part
starts over), is checked against the size and SHA-256 in :mod:`trouter.data.sources`, and
only then renamed over the target. A file that fails the check is deleted and named in
the error. A lock per target file (under ``.fetch-locks/``) keeps two fetches from writing the same
file.

Every download is bounded: nothing past the pinned size is written (a server that sends
more is cut off and named), each file has an overall deadline (:func:`deadline_for`, checked
as bytes arrive and capping each read's timeout), and a redirect is followed only to the
same host or to one in :data:`REDIRECT_HOSTS` (or the caller's list).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from filelock import FileLock

from trouter.config import TrouterError
from trouter.data.sources import SUITE_PREFIXES, DataFile, suite_files

READ_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
LOCKS = ".fetch-locks"
MAX_REDIRECTS = 5
#: Hosts a pinned origin may redirect to (GitHub serves large files from the second).
REDIRECT_HOSTS = frozenset({"raw.githubusercontent.com", "media.githubusercontent.com"})
#: The deadline of one file: this much, plus its size at the slowest rate worth waiting for.
DEADLINE_BASE_S = 120.0
SLOWEST_BYTES_PER_S = 50_000


class DataFetchError(TrouterError):
    """A download failed or a file failed verification (the message names each file)."""


class DownloadRefused(Exception):
    """A download broke a bound (size, deadline, redirect); the message says which.
    ``discard``: the bytes received are not worth resuming from."""

    def __init__(self, message: str, discard: bool = False) -> None:
        super().__init__(message)
        self.discard = discard


def deadline_for(item: DataFile) -> float:
    """Seconds one file may take, all redirects and retries of that run included."""
    return DEADLINE_BASE_S + item.size / SLOWEST_BYTES_PER_S


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


def _open(client: httpx.Client, url: str, headers: dict, bounds: _Bounds) -> httpx.Response:
    """The response to GET ``url`` after same-host or listed redirects, body not yet read."""
    allowed = {httpx.URL(url).host} | bounds.redirect_hosts
    for _ in range(MAX_REDIRECTS + 1):
        timeout = httpx.Timeout(
            bounds.read_timeout(), connect=min(CONNECT_TIMEOUT_S, bounds.read_timeout())
        )
        request = client.build_request("GET", url, headers=headers, timeout=timeout)
        response = client.send(request, stream=True)
        if not response.has_redirect_location:
            return response
        target = response.next_request.url if response.next_request else None
        response.close()  # the redirect's own body is never read
        if target is None or target.host not in allowed:
            raise DownloadRefused(
                f"{url} redirects to {target}, a host not allowed (allowed: "
                f"{', '.join(sorted(allowed))})"
            )
        url = str(target)
    raise DownloadRefused(f"more than {MAX_REDIRECTS} redirects")


@dataclass
class _Bounds:
    size: int  # the pinned size: never write past it
    seconds: float  # how long the file may take
    redirect_hosts: frozenset[str]
    deadline: float = field(init=False)  # time.monotonic() by which it must be complete

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def read_timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DownloadRefused(
                f"its deadline of {self.seconds:.0f} s passed; run the command again to resume"
            )
        return min(READ_TIMEOUT_S, left)


def _download(
    client: httpx.Client, url: str, part: Path, on_bytes: Callable[[int], None], bounds: _Bounds
) -> None:
    """Append to ``part`` from where it stops; start over if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    # identity: the bytes as stored (the checksum is of those), also what Range counts
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={have}-"} if have else {})
    response = _open(client, url, headers, bounds)
    try:
        if response.status_code == 416:  # the part is already complete (or longer)
            return
        response.raise_for_status()
        resumed = have and response.status_code == 206
        if have and not resumed:
            on_bytes(-have)
            have = 0
        with part.open("ab" if resumed else "wb") as out:
            try:
                for chunk in response.iter_raw():  # as received, so an interruption keeps them
                    room = bounds.size - have
                    out.write(chunk[:room])
                    on_bytes(min(len(chunk), room))
                    have += min(len(chunk), room)
                    if len(chunk) > room:
                        raise DownloadRefused(
                            f"the server sent more than the pinned {bounds.size:,} bytes",
                            discard=True,
                        )
                    bounds.read_timeout()  # raises once the deadline has passed
            finally:
                out.flush()
                os.fsync(out.fileno())
    finally:
        response.close()


def _fetch_one(
    client: httpx.Client,
    root: Path,
    item: DataFile,
    mirror: str | None,
    on_bytes,
    redirect_hosts: frozenset[str] = REDIRECT_HOSTS,
    deadline_s: float | None = None,
) -> str | None:
    """Download and verify one file; returns an error message, or None when it is in place."""
    target = root / item.path
    part = target.with_name(target.name + ".part")
    url = item.mirror_url(mirror) if mirror else item.url
    if part.exists() and part.stat().st_size > item.size:
        part.unlink()
    on_bytes(part.stat().st_size if part.exists() else 0)
    seconds = deadline_for(item) if deadline_s is None else deadline_s
    try:
        _download(client, url, part, on_bytes, _Bounds(item.size, seconds, redirect_hosts))
    except DownloadRefused as err:
        if err.discard:
            part.unlink(missing_ok=True)
        return f"{item.path}: download from {url} stopped: {err}"
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
    **bounds: Any,
) -> FetchReport:
    """Fetch every file of the data sets ``names`` into ``root`` (see :func:`fetch_files`)."""
    files = {f.path: f for name in names for f in suite_files(name)}
    return fetch_files(list(files.values()), root, mirror, progress, **bounds)


def fetch_files(
    files: list[DataFile],
    root: Path,
    mirror: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    redirect_hosts: Iterable[str] = REDIRECT_HOSTS,
    deadline_s: float | None = None,
) -> FetchReport:
    """Fetch each file into ``root`` unless it is already there and verified.

    ``progress(done_bytes, total_bytes)`` is called as bytes arrive; a file that fails
    leaves the total, so the bar never shows bytes that were not kept. A redirect is
    followed to the same host or one of ``redirect_hosts``; each file may take
    ``deadline_s`` (default :func:`deadline_for`). Raises :class:`DataFetchError` listing
    every file that failed, after trying all of them.
    """
    hosts = frozenset(redirect_hosts)
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

    with httpx.Client(follow_redirects=False) as client:
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
                    else _fetch_one(client, root, item, mirror, on_bytes, hosts, deadline_s)
                )
            done = start + (0 if error else item.size)
            total -= item.size if error else 0
            if progress:
                progress(done, total)
            (report.failed if error else report.downloaded).append(error or item.path)
    if report.failed:
        raise DataFetchError(
            f"{len(report.failed)} of {len(files)} file(s) not fetched into {root}: "
            + "; ".join(report.failed)
        )
    return report
