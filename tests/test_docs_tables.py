"""README and docs/ say what the code and the stored records say.

Every generated table (between ``<!-- table: COMMAND -->`` and ``<!-- /table -->``) must equal
a fresh run of its command on the committed records; ``python scripts/docs_tables.py``
rewrites them. The reference pages (CLI, pool file) are generated the same way, so a new
option or pool field fails here until the page is re-rendered. Relative links must resolve,
and no page speaks of working sessions or tracker issues.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIX = "run `python scripts/docs_tables.py` and commit the result"


def _load_docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts/docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_tables"] = module
    spec.loader.exec_module(module)
    return module


docs_tables = _load_docs_tables()


def test_every_generated_table_equals_a_rerender_of_the_records() -> None:
    stale = docs_tables.stale_blocks()
    assert not stale, f"stale tables ({FIX}):\n" + "\n".join(
        f"{block.path.relative_to(ROOT)}: {block.command}" for block, _ in stale
    )


def test_the_pages_with_numbers_carry_generated_tables() -> None:
    counts = {
        path.relative_to(ROOT).as_posix(): len(docs_tables.blocks(path))
        for path in docs_tables.documents()
    }
    assert counts["README.md"] >= 1  # the headline
    assert counts["docs/results.md"] >= 10
    assert counts["docs/local-pool.md"] >= 2
    assert counts["docs/cli.md"] == 1
    assert counts["docs/pool-file.md"] == 1


def test_a_changed_record_is_caught(tmp_path: Path) -> None:
    """The check compares numbers, not just that a block exists: one changed record shows."""
    block = next(
        b
        for b in docs_tables.blocks(ROOT / "docs/results.md")
        if "--compact results/routerbench-in-domain" in b.command
    )
    fresh = docs_tables.render(block.command)
    assert fresh == block.body
    assert "0.386 ± 0.001" in fresh  # auto, balanced, in-domain
    assert docs_tables.render(block.command.replace("in-domain.json", "cold-start.json")) != fresh


def test_a_table_command_must_be_one_of_the_table_scripts() -> None:
    with pytest.raises(ValueError, match="make tables"):
        docs_tables.run_table_command("python scripts/cut_fixtures.py")
    with pytest.raises(ValueError, match="not a table command"):
        docs_tables.run_table_command("rm -rf results")
    with pytest.raises(ValueError, match="matches no file"):
        docs_tables.run_table_command("python scripts/results_tables.py results/nothing-*.json")


def test_the_cli_reference_lists_every_command() -> None:
    text = (ROOT / "docs/cli.md").read_text(encoding="utf-8")
    for command in ("eval", "train", "route", "label", "serve", "quickstart", "synth qa",
                    "synth taxonomy", "data fetch", "models serve"):  # fmt: skip
        assert f"### `trouter {command}`" in text


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve() -> None:
    missing = []
    for path in docs_tables.documents() + [ROOT / "CONTRIBUTING.md"]:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = path.parent / target
            if not resolved.exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, "links to missing files:\n" + "\n".join(missing)


WORKING_NOTES = re.compile(r"\bsessions? [0-9]|\bissue [0-9]|\bgoals?\b", re.IGNORECASE)
#: Citing an upstream bug report ("ggml-org/llama.cpp issue 20824") is fine.
UPSTREAM_ISSUE = re.compile(r"[\w.-]+/[\w.-]+ issue [0-9]", re.IGNORECASE)


def _speaks_of_work(line: str) -> bool:
    return bool(WORKING_NOTES.search(UPSTREAM_ISSUE.sub("", line)))


def _prose_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    files += (ROOT / "results").glob("*/README.md")
    for folder in ("src", "scripts"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".md")]
    return files


def test_the_working_notes_pattern() -> None:
    assert _speaks_of_work("measured in session 4")
    assert _speaks_of_work("the issue 12 goals")
    assert not _speaks_of_work("a segfault (ggml-org/llama.cpp issue 20824)")
    assert not _speaks_of_work("the sessions of a conversation")


def test_no_page_speaks_of_working_sessions_or_tracker_issues() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _prose_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _speaks_of_work(line)
    ]
    assert not hits, "\n".join(hits)


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"README.md has {lines} lines; move detail into docs/"


def test_readme_install_commands_are_what_ci_runs() -> None:
    """README's two fresh-machine commands install at least the extras `.ci/run` installs
    and run the same tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    extras = re.compile(r'pip install[^\n]*-e "\.(\[[^\]]*\])?"')
    readme_extras = extras.search(readme)
    ci_extras = extras.search(ci)
    assert readme_extras and ci_extras

    def names(match: re.Match) -> set[str]:
        return set((match.group(1) or "[]").strip("[]").replace(" ", "").split(",")) - {""}

    assert names(readme_extras) >= names(ci_extras)
    test_command = ".venv/bin/python -m pytest -q"
    assert test_command in readme
    assert ci.rstrip().splitlines()[-1] == test_command
