"""The task taxonomy as data: a validated tree of task profiles and its difficulty leaves.

A taxonomy is Domain -> Subcategory -> Difficulty level -> (optional) User preference, every
node a *task profile* (name, one-sentence definition, example query). The router's latent
task types are the difficulty-level nodes ("leaves"); a leaf id is the node names from the
domain down joined with ``" > "``. Files are JSON; a broken file is rejected with an error
that names the node path, because taxonomies are written by LLMs and by hand and the first
thing a user needs is *where* the mistake is.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

SEPARATOR = " > "
LEVELS = ("domain", "subcategory", "difficulty level", "preference")
PLURALS = ("domains", "subcategories", "difficulty levels", "preferences")
#: Most children a node of each level may have (index = level of the parent; None = no cap).
MAX_CHILDREN = (10, 5, 6, 0)
REQUIRED_FIELDS = ("name", "definition", "example")


class TaxonomyError(ValueError):
    """A taxonomy file or object breaks the schema; the message names the node path."""


class TaskProfile(BaseModel):
    """One node's description: what the task is and what a typical query looks like.

    Emptiness is not enforced here, so that builders can hold a partial profile (a user's
    domain before its example is written); a :class:`Taxonomy` rejects empty fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str
    definition: str
    example: str

    def profile(self) -> TaskProfile:
        """This node's own profile, without children (hashable, cheap to keep in a Leaf)."""
        return TaskProfile(name=self.name, definition=self.definition, example=self.example)


class TaxonomyNode(TaskProfile):
    """A task profile with child nodes one level below (empty for the last level)."""

    children: list[TaxonomyNode] = []


@dataclass(frozen=True)
class Leaf:
    """A difficulty-level node with the profiles above it: the router's latent task type."""

    id: str
    path: tuple[TaskProfile, ...]
    preferences: tuple[TaskProfile, ...] = ()

    @property
    def domain(self) -> str:
        return self.path[0].name

    @property
    def subcategory(self) -> str:
        return self.path[1].name

    @property
    def difficulty(self) -> str:
        return self.path[2].name

    def profile_text(self, include_example: bool = True) -> str:
        """The text embedded as this leaf's task embedding.

        Subcategory and difficulty carry the task type (the method builds e_t from them);
        the domain name and the example query anchor the text in the vocabulary real
        queries use, which the definitions alone (abstract prose) lack.
        """
        domain, sub, diff = self.path
        text = (
            f"{domain.name}: {sub.name}. {sub.definition} Difficulty {diff.name}: {diff.definition}"
        )
        if include_example:
            text += f" Example: {diff.example}"
        return text


class Taxonomy(BaseModel):
    """A named task taxonomy; construct with :meth:`load`, :meth:`default` or from data."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str
    description: str = ""
    domains: list[TaxonomyNode]

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_taxonomy_data(data)
        return data

    # ----- leaves ------------------------------------------------------------------------
    def leaves(self) -> list[Leaf]:
        """Difficulty-level nodes in file order (domain, then subcategory, then difficulty)."""
        return list(_leaves_of(self))

    def leaf_ids(self) -> list[str]:
        return [leaf.id for leaf in self.leaves()]

    def leaf(self, leaf_id: str) -> Leaf:
        """The leaf with this id; a KeyError names the id and the closest existing ids."""
        for leaf in self.leaves():
            if leaf.id == leaf_id:
                return leaf
        close = difflib.get_close_matches(leaf_id, self.leaf_ids(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"taxonomy {self.name!r} has no leaf {leaf_id!r}{hint}")

    def domain_names(self) -> list[str]:
        return [d.name for d in self.domains]

    # ----- files -------------------------------------------------------------------------
    @classmethod
    def from_data(cls, data: Any, source: str = "taxonomy") -> Taxonomy:
        """Validate parsed JSON; every error is a TaxonomyError prefixed with ``source``."""
        try:
            check_taxonomy_data(data)
            return cls.model_validate(data)
        except TaxonomyError as err:
            raise TaxonomyError(f"{source}: {err}") from None
        except ValidationError as err:  # only reachable for shapes the raw check lets through
            raise TaxonomyError(f"{source}: {_first_error(err)}") from None

    @classmethod
    def load(cls, path: str | Path) -> Taxonomy:
        from trouter.config import MalformedDataError
        from trouter.data.jsonl import read_text

        path = Path(path)
        try:
            text = read_text(path, "taxonomy file")  # not UTF-8: an error naming file:line
        except MalformedDataError as err:
            raise TaxonomyError(str(err)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise TaxonomyError(
                f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
            ) from None
        return cls.from_data(data, source=str(path))

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.model_dump(exclude_defaults=True), indent=2, ensure_ascii=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def default(cls) -> Taxonomy:
        """The packaged default taxonomy (``trouter/taxonomy/default.json``)."""
        return cls.from_data(json.loads(_default_text()), source="packaged default.json")


@lru_cache(maxsize=1)
def _default_text() -> str:
    return resources.files("trouter.taxonomy").joinpath("default.json").read_text("utf-8")


def _leaves_of(taxonomy: Taxonomy):
    for domain in taxonomy.domains:
        for sub in domain.children:
            for diff in sub.children:
                yield Leaf(
                    id=SEPARATOR.join((domain.name, sub.name, diff.name)),
                    path=(domain.profile(), sub.profile(), diff.profile()),
                    preferences=tuple(p.profile() for p in diff.children),
                )


# ----- validation of parsed JSON -----------------------------------------------------------
def check_taxonomy_data(data: Any) -> None:
    """Check parsed JSON against the schema; raise TaxonomyError naming the node path.

    Runs before pydantic so that errors read as taxonomy paths
    ("Mathematics > Algebra > (child 2): missing 'definition'") rather than list indices.
    """
    data = _plain(data)
    if not isinstance(data, dict):
        raise TaxonomyError(f"top level must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "domains"})
    if unknown:
        raise TaxonomyError(f"top level: unknown field(s) {unknown}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError("top level: missing 'name' (a non-empty string)")
    if not isinstance(data.get("description", ""), str):
        raise TaxonomyError("top level: 'description' must be a string")
    domains = data.get("domains")
    if not isinstance(domains, list) or not domains:
        raise TaxonomyError("top level: 'domains' must be a non-empty list")
    _check_siblings(domains, level=0, parent_path=())


def _check_siblings(nodes: list[Any], level: int, parent_path: tuple[str, ...]) -> None:
    seen: dict[str, str] = {}
    for index, node in enumerate(nodes, start=1):
        label = _label(node, index)
        here = (*parent_path, label)
        _check_node(node, level, here)
        key = node["name"].strip().casefold()
        if key in seen:
            raise TaxonomyError(
                f"{_where(here)}: duplicate {LEVELS[level]} name {node['name'].strip()!r} "
                f"(also used by sibling {seen[key]!r})"
            )
        seen[key] = node["name"].strip()


def _check_node(node: Any, level: int, path: tuple[str, ...]) -> None:
    where = _where(path)
    if not isinstance(node, dict):
        raise TaxonomyError(f"{where}: a {LEVELS[level]} must be a JSON object")
    unknown = sorted(set(node) - {*REQUIRED_FIELDS, "children"})
    if unknown:
        raise TaxonomyError(f"{where}: unknown field(s) {unknown}")
    for field in REQUIRED_FIELDS:
        value = node.get(field)
        if value is None:
            raise TaxonomyError(f"{where}: missing {field!r}")
        if not isinstance(value, str) or not value.strip():
            raise TaxonomyError(f"{where}: {field!r} must be a non-empty string")
    if SEPARATOR in node["name"]:
        raise TaxonomyError(
            f"{where}: name {node['name']!r} contains {SEPARATOR!r}, which separates "
            "node names in leaf ids"
        )
    children = node.get("children", [])
    if not isinstance(children, list):
        raise TaxonomyError(f"{where}: 'children' must be a list")
    cap = MAX_CHILDREN[level]
    if level < 2 and not children:
        raise TaxonomyError(f"{where}: a {LEVELS[level]} needs at least one {LEVELS[level + 1]}")
    if level == 3 and children:
        raise TaxonomyError(
            f"{where}: too deep; a preference (level 4, the last level) cannot have children"
        )
    if len(children) > cap:
        raise TaxonomyError(f"{where}: {len(children)} {PLURALS[level + 1]}, at most {cap} allowed")
    if children:
        _check_siblings(children, level + 1, path)


def _plain(data: Any) -> Any:
    """Turn pydantic nodes (direct construction in Python) into the JSON shape checked here."""
    if isinstance(data, BaseModel):
        return data.model_dump()
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_plain(item) for item in data]
    return data


def _label(node: Any, index: int) -> str:
    if isinstance(node, dict) and isinstance(node.get("name"), str) and node["name"].strip():
        return node["name"].strip()
    return f"(child {index})"


def _where(path: tuple[str, ...]) -> str:
    return SEPARATOR.join(path)


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    return f"{loc}: {first['msg']}"
