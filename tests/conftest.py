"""Shared pytest fixtures: the committed data fixtures, and the full public data if present.

Every test reads the small cuts in ``tests/fixtures/data`` (made by
``scripts/cut_fixtures.py``): ``TROUTER_DATA_DIR`` points there for the whole session, so
the real loaders run on them and the tests pass on a fresh clone without network. Tests
that need a whole suite ask for ``full_data_dir``: the data directory the user has
(``TROUTER_DATA_DIR`` as set before the session, ``../shared/data`` or the fetched copy in
the cache), and skip, saying why, when it lacks the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import trouter.config
from trouter.data.sources import SUITE_PREFIXES, missing_files

FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"

#: Resolved before the session points TROUTER_DATA_DIR at the fixtures.
FULL_DATA = trouter.config.data_dir()
#: Set by CI, which has the whole data: there a missing file fails the test instead.
REQUIRE_FULL_DATA = os.environ.get("TROUTER_TESTS_REQUIRE_FULL_DATA") == "1"
os.environ["TROUTER_DATA_DIR"] = str(FIXTURE_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The committed fixture data (a few hundred rows per suite, same layout and schema)."""
    return FIXTURE_DATA


def require_full_data(*names: str) -> Path:
    """The full data directory, or skip the calling test naming what is missing."""
    for name in names or tuple(SUITE_PREFIXES):
        missing = missing_files(FULL_DATA, name)
        if missing:
            reason = (
                f"needs the whole {name} data ({FULL_DATA / missing[0].path} is missing); "
                f"run `trouter data fetch {name}` or set TROUTER_DATA_DIR"
            )
            (pytest.fail if REQUIRE_FULL_DATA else pytest.skip)(reason)
    return FULL_DATA


@pytest.fixture
def full_data_dir(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The full public data, as ``TROUTER_DATA_DIR`` for this test; skips when absent.

    Names the data sets it needs with ``@pytest.mark.full_data("routerbench", ...)``
    (all of them without the mark).
    """
    marker = request.node.get_closest_marker("full_data")
    root = require_full_data(*(marker.args if marker else ()))
    monkeypatch.setenv("TROUTER_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def mbpp_fold():
    """RouterBench's mbpp rows streamed (the committed fixture cut); the base knows only
    ARC-Challenge and WinoGrande. Shared by the online router's tests."""
    from trouter.data.suites import load_suite
    from trouter.evaluation.online import OnlineConfig, stream_folds

    (fold,) = stream_folds(load_suite("routerbench"), 0, OnlineConfig(tasks=("mbpp",)))
    return fold
