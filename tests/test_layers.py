"""No import circles: lower layers never import higher ones (checked on the source)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trouter"

#: package -> the trouter packages it must never import (at module level or inside a function)
FORBIDDEN = {
    "config": ["data", "llm", "local", "routers", "serving", "cli", "labelling", "synthesis"],
    "data": ["llm", "local", "routers", "serving", "cli", "labelling", "synthesis"],
    "llm": ["local", "routers", "serving", "cli", "labelling", "synthesis", "taxonomy"],
    "labelling": ["serving", "cli", "synthesis", "local"],
    "synthesis": ["serving", "cli", "labelling", "local"],
    "routers": ["serving", "cli", "labelling", "synthesis", "llm", "local"],
    "store": ["routers", "serving", "cli", "labelling", "synthesis", "llm", "local"],
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    root = SRC / layer
    files = sorted(root.rglob("*.py")) if root.is_dir() else [SRC / f"{layer}.py"]
    banned = tuple(f"trouter.{name}" for name in FORBIDDEN[layer])
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in files
        for line, module in _imports(path)
        if module.startswith(banned)
    ]
    assert offenders == []
