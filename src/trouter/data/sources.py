"""Where every public data file comes from, pinned to a commit, with its SHA-256 and size.

``trouter data fetch`` downloads these files into the data directory, laid out as the
loaders read them (``routerbench/``, ``llmrouter/``, ``routerdc_split2/``, ``routellm/``,
``questions/``); a ``--mirror`` serves the same layout. The checksums were computed from
unchanged copies of the releases; a file whose bytes differ is refused. The list itself
(path, origin repository and commit, SHA-256, size) is ``sources.json`` beside this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from trouter.config import DataNotFoundError

#: The manifest itself is data (one object per file), kept beside this module.
MANIFEST = "sources.json"


@dataclass(frozen=True)
class DataFile:
    """One file of the data directory: its relative path and its pinned public origin."""

    path: str
    repo: str
    commit: str
    remote_path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.remote_path}"

    def mirror_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.path}"


def _load_manifest() -> tuple[DataFile, ...]:
    rows = json.loads(files("trouter.data").joinpath(MANIFEST).read_text(encoding="utf-8"))
    return tuple(DataFile(**row) for row in rows)


FILES: tuple[DataFile, ...] = _load_manifest()
BY_PATH = {f.path: f for f in FILES}

#: What each fetchable name needs: the suites of ``load_suite`` plus the question sets.
SUITE_PREFIXES: dict[str, tuple[str, ...]] = {
    "routerbench": ("routerbench/",),
    "llmrouter": ("llmrouter/",),
    "routerdc": ("routerdc_split2/",),
    "routellm-gsm8k": ("routellm/gsm8k_responses.csv",),
    "routellm-mmlu": ("routellm/mmlu/",),
    "routellm-mtbench": ("routellm/mt_bench_",),
    "questions": ("questions/",),
}


def suite_files(name: str) -> list[DataFile]:
    """The files ``name`` needs; ``KeyError`` naming the choices for an unknown name."""
    if name not in SUITE_PREFIXES:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(SUITE_PREFIXES)}")
    return [f for f in FILES if f.path.startswith(SUITE_PREFIXES[name])]


def suite_of(path: str) -> str:
    """The fetchable name that brings ``path`` (for error messages)."""
    for name, prefixes in SUITE_PREFIXES.items():
        if path.startswith(prefixes):
            return name
    raise KeyError(path)


def missing_files(root: Path, name: str) -> list[DataFile]:
    """Files of data set ``name`` that are absent under ``root`` (existence only)."""
    return [f for f in suite_files(name) if not (root / f.path).is_file()]


def require_data(name: str, root: Path) -> None:
    """Raise :class:`DataNotFoundError` naming the first missing file of ``name`` and the
    command that fetches it."""
    missing = missing_files(root, name)
    if missing:
        more = f" (and {len(missing) - 1} more of its files)" if len(missing) > 1 else ""
        raise DataNotFoundError(
            f"{name} needs the data file {root / missing[0].path}, which is missing{more}. "
            f"Fetch the public release with `trouter data fetch {name}` (it downloads into "
            f"{root}; set TROUTER_DATA_DIR to use another folder)."
        )
