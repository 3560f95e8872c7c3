"""Where trouter reads data and keeps caches, and the error types every layer raises.

Both folders are set by environment variables: ``TROUTER_DATA_DIR`` (the public routing
data) and ``TROUTER_CACHE_DIR`` (embeddings, LLM calls, model files, fetched data).
"""

from __future__ import annotations

import os
from pathlib import Path


class TrouterError(Exception):
    """An expected failure with a message meant for the user (the CLI prints it, exit 2)."""


class DataNotFoundError(TrouterError, FileNotFoundError):
    """A data file or folder that a loader needs is missing."""


class MalformedDataError(TrouterError, ValueError):
    """A data file exists but its content does not match the expected schema."""


def cache_dir() -> Path:
    """Folder for embedding, LLM-call and model-file caches (``TROUTER_CACHE_DIR``)."""
    configured = os.environ.get("TROUTER_CACHE_DIR")
    path = Path(configured).expanduser() if configured else Path.home() / ".cache" / "trouter"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _shared_data_candidates() -> list[Path]:
    """``../shared/data`` relative to the working directory, then beside the checkout this
    package was installed from (an editable install)."""
    beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
    return [Path.cwd().parent / "shared" / "data", beside_checkout]


def data_dir() -> Path:
    """The folder holding the public routing data.

    Resolved in this order: ``TROUTER_DATA_DIR`` if set; else ``../shared/data`` if it
    exists (see :func:`_shared_data_candidates`); else ``<cache dir>/data``, where
    ``trouter data fetch`` puts the files. The folder need not exist yet: a loader that
    misses a file raises :class:`DataNotFoundError` naming it and the fetch command.
    """
    configured = os.environ.get("TROUTER_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    for candidate in _shared_data_candidates():
        if candidate.is_dir():
            return candidate
    return cache_dir() / "data"
