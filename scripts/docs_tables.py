"""Re-render the results tables in README.md and docs/*.md from the stored records.

A generated table sits between two markers that name the command which prints it::

    <!-- table: python scripts/results_tables.py --compact results/routerbench-in-domain.json -->
    ...the command's output, written here...
    <!-- /table -->

The block shows the command above the table, so a reader sees what made it. Only the table
scripts in ``TABLE_SCRIPTS`` may be named; globs in their arguments are expanded (sorted),
as a shell would. Paths are relative to the repository root.

Usage:
    python scripts/docs_tables.py            # rewrite every block in place
    python scripts/docs_tables.py --check    # exit 1 and list the blocks that differ
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE_SCRIPTS = (
    "results_tables.py",
    "local_pool_table.py",
    "encoder_table.py",
    "reference_docs.py",
    "online_table.py",
)
BLOCK = re.compile(r"(<!-- table: (?P<command>.+?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


@dataclass(frozen=True)
class Block:
    path: Path
    command: str
    body: str


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [Block(path, m["command"], m["body"]) for m in BLOCK.finditer(text)]


def run_table_command(command: str) -> str:
    """The stdout of ``python scripts/NAME.py ARGS`` run in this process, from the root."""
    words = shlex.split(command)
    if len(words) < 2 or words[0] != "python" or not words[1].startswith("scripts/"):
        raise ValueError(f"not a table command: {command!r}")
    script = ROOT / words[1]
    if script.name not in TABLE_SCRIPTS:
        raise ValueError(f"{command!r}: only {', '.join(TABLE_SCRIPTS)} make tables")
    args: list[str] = []
    for word in words[2:]:
        matches = sorted(glob.glob(word, root_dir=ROOT)) if glob.has_magic(word) else [word]
        if not matches:
            raise ValueError(f"{command!r}: {word} matches no file")
        args += matches
    out = io.StringIO()
    saved_argv, saved_cwd = sys.argv, Path.cwd()
    sys.argv = [str(script), *args]
    try:
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise RuntimeError(f"{command!r} exited with {stop.code}") from None
    finally:
        sys.argv = saved_argv
        assert Path.cwd() == saved_cwd
    return out.getvalue()


def render(command: str) -> str:
    """The block body: the command shown as code, then its table."""
    table = run_table_command(command).strip("\n")
    return f"```bash\n{command}\n```\n\n{table}\n\n"


def stale_blocks() -> list[tuple[Block, str]]:
    """Every block whose committed body differs from a re-render, with the re-render."""
    stale = []
    for path in documents():
        for block in blocks(path):
            fresh = render(block.command)
            if fresh != block.body:
                stale.append((block, fresh))
    return stale


def rewrite() -> int:
    changed = 0
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = BLOCK.sub(lambda m: m[1] + render(m["command"]) + m[4], text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed += 1
            print(f"rewrote {path.relative_to(ROOT)}")
    return changed


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv == ["--check"]:
        stale = stale_blocks()
        for block, _ in stale:
            print(f"{block.path.relative_to(ROOT)}: stale table: {block.command}")
        return 1 if stale else 0
    rewrite()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
