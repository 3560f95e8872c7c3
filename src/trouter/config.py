"""Where trouter reads data and keeps caches. Both are set by environment variables."""

from __future__ import annotations

import os
from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """A data file or folder that a loader needs is missing."""


class MalformedDataError(ValueError):
    """A data file exists but its content does not match the expected schema."""


def data_dir() -> Path:
    """The folder holding the public routing data (``TROUTER_DATA_DIR``).

    Defaults to ``../shared/data`` relative to the working directory, or beside the
    checkout this package was installed from (editable install), whichever exists.
    """
    configured = os.environ.get("TROUTER_DATA_DIR")
    if configured:
        path = Path(configured).expanduser()
    else:
        beside_checkout = Path(__file__).resolve().parents[3] / "shared" / "data"
        path = Path.cwd().parent / "shared" / "data"
        if not path.is_dir() and beside_checkout.is_dir():
            path = beside_checkout
    if not path.is_dir():
        raise DataNotFoundError(
            f"data directory {path} does not exist; set TROUTER_DATA_DIR to the folder that "
            "holds routerbench/, llmrouter/, routerdc_split2/, routellm/ and questions/"
        )
    return path


def cache_dir() -> Path:
    """Folder for embedding, LLM-call and model-file caches (``TROUTER_CACHE_DIR``)."""
    configured = os.environ.get("TROUTER_CACHE_DIR")
    path = Path(configured).expanduser() if configured else Path.home() / ".cache" / "trouter"
    path.mkdir(parents=True, exist_ok=True)
    return path
