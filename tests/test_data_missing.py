"""Every command that reads a suite, run with the data absent: exit 2 and one paragraph that
names the missing file and the `trouter data fetch` command; and the data-dir resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import trouter.config
from trouter.cli import app
from trouter.data.suites import SUITES


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty-data"
    monkeypatch.setenv("TROUTER_DATA_DIR", str(empty))
    return empty


COMMANDS = {
    "eval in-domain": ["eval", "--suite", "{suite}", "--setting", "in-domain",
                       "--routers", "cheapest", "--seeds", "1", "--no-progress"],
    "eval cold-start": ["eval", "--suite", "{suite}", "--setting", "cold-start",
                        "--routers", "cheapest", "--seeds", "1", "--no-progress"],
    "train": ["train", "--router", "knn", "--suite", "{suite}", "--out", "{tmp}/model"],
}  # fmt: skip


@pytest.mark.parametrize("suite", list(SUITES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_missing_suite_exits_2_naming_file_and_fetch_command(command, suite, no_data, tmp_path):
    args = [a.format(suite=suite, tmp=tmp_path) for a in COMMANDS[command]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # Rich wraps long lines
    assert f"`trouter data fetch {suite}`" in text
    assert str(no_data) in text  # names the missing file under the data directory
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error


def test_data_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TROUTER_DATA_DIR, then ../shared/data if it exists, then <cache dir>/data."""
    checkout = tmp_path / "project" / "trouter"
    checkout.mkdir(parents=True)
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(trouter.config, "_shared_data_candidates",
                        lambda: [Path.cwd().parent / "shared" / "data"])  # fmt: skip
    monkeypatch.delenv("TROUTER_DATA_DIR")
    assert trouter.config.data_dir() == tmp_path / "cache" / "data"
    shared = tmp_path / "project" / "shared" / "data"
    shared.mkdir(parents=True)
    assert trouter.config.data_dir() == shared
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path / "mine"))
    assert trouter.config.data_dir() == tmp_path / "mine"
