"""Prompts for building a task taxonomy with an LLM, one level at a time.

Every level (domains, subcategories of a domain, difficulty levels of a subcategory,
preferences of a subcategory) goes through the same three prompts: *generate* a node set,
*critique and revise* it, *choose* between two sets. Each node is a task profile
(name, one-sentence definition, example query) and every reply is JSON, so the same parser
serves all levels. The wording only states what each level must satisfy (the method's
caps and criteria); the loop in :mod:`trouter.taxonomy.builder` does the rest.
The parsers at the end read the replies back: fixable slips (duplicates, too many nodes)
are repaired with a warning, the rest raise ``ValueError`` with a message meant for the
model, which :func:`trouter.synthesis.llmjson.ask_json` feeds back on the retry.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from trouter.taxonomy.model import TaskProfile

SYSTEM = (
    "You design task taxonomies used to route user queries to the most suitable large "
    "language model. Each node is a task profile: a short name, a one-sentence definition "
    "and one realistic example query. You reply with JSON only, no prose around it."
)

#: Domains used when the user gives neither domains nor example queries (the method's seeds).
SEED_DOMAINS = (
    "Mathematics",
    "Creative Writing",
    "Commonsense Knowledge",
    "Programming",
    "Long-context Understanding",
    "Reading Comprehension",
)
NO_PREFERENCE = "No explicit preference"

NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "definition": {"type": "string"},
                    "example": {"type": "string"},
                },
                "required": ["name", "definition", "example"],
            },
        }
    },
    "required": ["nodes"],
}
REVISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"critique": {"type": "string"}, **NODE_SCHEMA["properties"]},
    "required": ["critique", "nodes"],
}
CHOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string"}, "choice": {"enum": ["A", "B"]}},
    "required": ["reason", "choice"],
}

_NODE_FORMAT = (
    'Reply with a JSON object {"nodes": [{"name": ..., "definition": ..., "example": ...}, ...]}.'
    " Names are short (1-5 words), unique and never contain the character '>'. A definition "
    "is one sentence. An example is one realistic user query of this kind, written out in full."
)


def _node_format(spec: LevelSpec) -> str:
    """The reply format; for difficulty levels with a filled-in skeleton of a scale."""
    if spec.level != "difficulty level":
        return _NODE_FORMAT
    return _NODE_FORMAT.replace(
        '[{"name": ..., "definition": ..., "example": ...}, ...]}.',
        '[{"name": "Easy", "definition": ..., "example": ...}, {"name": "Medium", ...}, '
        '{"name": "Hard", ...}]} (other level names or another number of levels are fine).',
    )


@dataclass(frozen=True)
class LevelSpec:
    """What one run of the loop must produce: which level, under which parent, which rules."""

    level: str  # "domain" | "subcategory" | "difficulty level" | "preference"
    where: str  # the parent path, e.g. "Mathematics > Algebra"; "" for domains
    cap: int
    parents: tuple[TaskProfile, ...] = ()
    required: tuple[TaskProfile, ...] = ()  # nodes that must be kept (user domains, seeds)
    closed: bool = False  # True: exactly the required nodes, nothing else
    examples: tuple[str, ...] = ()  # unlabelled deployment queries to cover
    rules: tuple[str, ...] = field(default_factory=tuple)

    @property
    def plural(self) -> str:
        return self.level[:-1] + "ies" if self.level.endswith("y") else self.level + "s"

    @property
    def label(self) -> str:
        return f"{self.level} set for {self.where}" if self.where else f"{self.level} set"


def render_nodes(nodes: list[TaskProfile]) -> str:
    """A node set as compact JSON, one node per line (the format replies use)."""
    rows = ",\n  ".join(json.dumps(n.model_dump(), ensure_ascii=False) for n in nodes)
    return '{"nodes": [\n  ' + rows + "\n]}"


def _context(spec: LevelSpec) -> str:
    lines = []
    for title, profile in zip(
        ("Domain", "Subcategory", "Difficulty level"), spec.parents, strict=False
    ):
        lines.append(f"{title}: {profile.name} - {profile.definition} (example: {profile.example})")
    return "\n".join(lines)


def _requirements(spec: LevelSpec) -> str:
    parts: list[str] = []
    if spec.closed:
        parts.append(
            f"Use exactly these {len(spec.required)} {spec.plural} and no others, with these "
            "names; keep a definition given here word for word, write the missing ones:"
        )
    elif spec.required:
        parts.append(f"Keep these {spec.plural} (same names); you may add others:")
    for node in spec.required:
        definition = node.definition or "(write a definition)"
        parts.append(f"- {node.name}: {definition}")
    if spec.examples:
        parts.append(
            "The deployment receives queries like the following; the set must cover every "
            "one of them that belongs here:"
        )
        parts.extend(f"- {q}" for q in spec.examples)
    parts.extend(f"Rule: {rule}" for rule in spec.rules)
    parts.append(f"At most {spec.cap} {spec.plural}.")
    return "\n".join(parts)


def _target(spec: LevelSpec) -> str:
    """What to write, naming the parent: small models otherwise repeat the parent node."""
    if not spec.parents:
        return f"Write the top-level {spec.plural} of the task taxonomy."
    parent = spec.parents[-1].name
    if spec.level == "subcategory":
        return f"Write the subcategories of the domain {parent!r}: kinds of {parent} task."
    if spec.level == "difficulty level":
        return (
            f"Write the difficulty levels of the subcategory {parent!r}: an ordered scale such "
            f"as Easy, Medium, Hard, each node one level, saying what makes a {parent} task "
            "that hard. Do not repeat the subcategory itself as a node."
        )
    return f"Write the {spec.plural} a user may have for {parent!r} tasks."


def generate_messages(spec: LevelSpec) -> list[dict[str, str]]:
    """Ask for a first node set for one level."""
    context = _context(spec)
    body = (f"{context}\n\n" if context else "") + (
        f"{_target(spec)}\n{_requirements(spec)}\n\n{_node_format(spec)}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


def critique_messages(
    spec: LevelSpec, current: list[TaskProfile], round_index: int
) -> list[dict[str, str]]:
    """Ask the model to criticise a set and return a revised one.

    The round number is part of the prompt so that a response cache keyed on the prompt
    does not collapse several rounds into one replayed answer.
    """
    context = _context(spec)
    body = (
        (f"{context}\n\n" if context else "")
        + f"Review round {round_index}. Here is the current {spec.label}:\n"
        + render_nodes(current)
        + "\n\nCritique it: are the nodes mutually exclusive, together exhaustive, at a "
        "consistent granularity, with precise definitions and realistic examples? Then "
        "return the revised set (return the same set unchanged if it needs no change).\n"
        + _requirements(spec)
        + "\n\n"
        + _node_format(spec).replace('{"nodes"', '{"critique": "...", "nodes"', 1)
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


def choose_messages(
    spec: LevelSpec, first: list[TaskProfile], second: list[TaskProfile]
) -> list[dict[str, str]]:
    """Ask which of two candidate sets is better (the caller randomises the order)."""
    context = _context(spec)
    body = (
        (f"{context}\n\n" if context else "")
        + f"Two candidate versions of the {spec.label} follow.\n\nSet A:\n"
        + render_nodes(first)
        + "\n\nSet B:\n"
        + render_nodes(second)
        + "\n\nWhich set is the better taxonomy level: mutually exclusive, exhaustive, "
        "consistent in granularity, precise and useful for telling apart the queries that "
        "different language models handle well?\n"
        + _requirements(spec)
        + '\n\nReply with a JSON object {"reason": "...", "choice": "A" or "B"}.'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": body}]


DOMAIN_RULES = (
    "Domains are broad fields of user requests (like those covered by benchmark families "
    "such as MMLU, AGIEval, BIG-Bench, GSM8K or HumanEval); they do not overlap.",
)
SUBCATEGORY_RULES = (
    "Subcategories split the domain into distinct kinds of task that need different skills.",
)
DIFFICULTY_RULES = (
    "Difficulty levels form one ordered scale from easiest to hardest (for example Easy, "
    "Medium, Hard), listed in that order, at least 2 levels.",
    "Define each level for this subcategory so the levels are mutually exclusive and "
    "exhaustive, by reasoning depth, expected output length and required capability.",
)
PREFERENCE_RULES = (
    f"Preferences are what a user may want from the answer beyond correctness (for example "
    f"brevity, step-by-step explanation, a given format); include one named "
    f'"{NO_PREFERENCE}".',
)


# ----- parsing LLM replies ------------------------------------------------------------------
def _node_items(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if isinstance(data.get("nodes"), list):
            return data["nodes"]
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    raise ValueError('expected a JSON object with a "nodes" list')


def _field(item: dict[str, Any], name: str, aliases: tuple[str, ...], index: int) -> str:
    for key in (name, *aliases):
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return " ".join(value.split())
    raise ValueError(f'node {index} has no non-empty "{name}" string')


def parse_node_set(spec: LevelSpec, data: Any) -> tuple[list[TaskProfile], list[str]]:
    """Validate one node set against ``spec``; returns the nodes and warnings for the user.

    Fixable problems (duplicates, too many nodes, a missing "No explicit preference") are
    repaired with a warning; problems only the model can fix raise ValueError.
    """
    notes: list[str] = []
    nodes: list[TaskProfile] = []
    seen: set[str] = set()
    for index, item in enumerate(_node_items(data), start=1):
        if not isinstance(item, dict):
            raise ValueError(f"node {index} is not a JSON object")
        name = _field(item, "name", ("title",), index)
        if ">" in name:
            raise ValueError(f"node {index} name {name!r} contains '>'")
        if any(name.casefold() == parent.name.casefold() for parent in spec.parents):
            raise ValueError(
                f"node {index} is named {name!r} like the node above it; write {spec.plural} "
                f"of {spec.parents[-1].name!r}, not {spec.parents[-1].name!r} itself"
            )
        if name.casefold() in seen:
            notes.append(f"{spec.label}: dropped duplicate {spec.level} {name!r}")
            continue
        seen.add(name.casefold())
        nodes.append(
            TaskProfile(
                name=name,
                definition=_field(item, "definition", ("description",), index),
                example=_field(item, "example", ("example_query", "example query"), index),
            )
        )
    nodes = _rename_to_required(spec, nodes, notes)
    by_key = {n.name.casefold(): n for n in nodes}
    missing = [r.name for r in spec.required if r.name.casefold() not in by_key]
    if missing:
        raise ValueError(f"the set must include {spec.level}(s) {', '.join(map(repr, missing))}")
    # required nodes keep the user's name and definition; the model's order is kept
    replaced = {
        given.name.casefold(): TaskProfile(
            name=given.name,
            definition=given.definition or by_key[given.name.casefold()].definition,
            example=by_key[given.name.casefold()].example,
        )
        for given in spec.required
    }
    if spec.closed and len(nodes) > len(replaced):
        extra = [n.name for n in nodes if n.name.casefold() not in replaced]
        notes.append(f"{spec.label}: dropped unrequested {', '.join(extra)}")
    nodes = [
        replaced.get(n.name.casefold(), n)
        for n in nodes
        if n.name.casefold() in replaced or not spec.closed
    ]
    if spec.level == "preference" and NO_PREFERENCE.casefold() not in {
        n.name.casefold() for n in nodes
    }:
        notes.append(f"{spec.label}: added {NO_PREFERENCE!r}")
        nodes.insert(
            0,
            TaskProfile(
                name=NO_PREFERENCE,
                definition="The user states no wish about the answer beyond a correct response.",
                example=nodes[0].example if nodes else "Answer the question.",
            ),
        )
    if len(nodes) > spec.cap:
        protected = {*replaced, NO_PREFERENCE.casefold()}
        room = spec.cap - sum(n.name.casefold() in protected for n in nodes)
        kept, dropped = [], []
        for node in nodes:
            if node.name.casefold() in protected or room > 0:
                room -= node.name.casefold() not in protected
                kept.append(node)
            else:
                dropped.append(node.name)
        nodes = kept
        notes.append(f"{spec.label}: kept {len(kept)}, dropped {', '.join(dropped)} (cap)")
    minimum = 2 if spec.level == "difficulty level" else 1
    if len(nodes) < minimum:
        raise ValueError(f"the set needs at least {minimum} {spec.level}(s)")
    return nodes, notes


def _rename_to_required(
    spec: LevelSpec, nodes: list[TaskProfile], notes: list[str]
) -> list[TaskProfile]:
    """Map near-miss names onto the required ones ("Legal" for "Legal reasoning").

    Small generators shorten or rephrase names they were told to keep; the user's name is
    what counts, so a node whose name contains, or is contained in, a missing required
    name (or is close to it) takes that name. Each node is claimed at most once.
    """
    present = {n.name.casefold() for n in nodes}
    renamed = list(nodes)
    for given in spec.required:
        want = given.name.casefold()
        if want in present:
            continue
        free = [i for i, n in enumerate(renamed) if n.name.casefold() not in _required_keys(spec)]
        scores = {i: _closeness(renamed[i].name.casefold(), want) for i in free}
        best = max(scores, key=scores.__getitem__, default=None)
        if best is not None and scores[best] >= 0.75:
            notes.append(f"{spec.label}: took {renamed[best].name!r} as {given.name!r}")
            renamed[best] = renamed[best].model_copy(update={"name": given.name})
            present.add(want)
    return renamed


def _closeness(have: str, want: str) -> float:
    if have in want or want in have:
        return 1.0
    return difflib.SequenceMatcher(None, have, want).ratio()


def _required_keys(spec: LevelSpec) -> set[str]:
    return {r.name.casefold() for r in spec.required}


def parse_choice(data: Any) -> str:
    choice = data.get("choice") if isinstance(data, dict) else None
    if isinstance(choice, str):
        letter = choice.strip().upper().removeprefix("SET").strip()
        if letter in ("A", "B"):
            return letter
    raise ValueError('expected {"reason": "...", "choice": "A" or "B"}')


def same_nodes(a: list[TaskProfile], b: list[TaskProfile]) -> bool:
    return [n.model_dump() for n in a] == [n.model_dump() for n in b]
