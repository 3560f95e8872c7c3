"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import trouter.config


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public routing data (``TROUTER_DATA_DIR`` or ``../shared/data``).

    Resolved once per session, before any test changes the environment; a missing folder
    fails loudly (DataNotFoundError) rather than skipping, since most tests need it.
    """
    return trouter.config.data_dir()
