"""The question-answer generation prompt for one taxonomy leaf, and its reply parser.

The prompt carries the three task profiles of the leaf (domain, subcategory, difficulty)
and the subcategory's whole difficulty scale, so the generator can aim at *this* level
rather than a generic one. Each call names its batch number and lists questions already
kept for the leaf: that steers the model away from repeats and keeps every request
distinct, so a deterministic or disk-cached generator is never asked the same prompt twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trouter.taxonomy.model import Leaf

#: Most already-kept questions quoted back in a request (older ones are summarised by count).
AVOID_LIMIT = 12
AVOID_CHARS = 160

SYSTEM = (
    "You write evaluation data for language models: realistic user questions of a given task "
    "type, each with a correct reference answer. You reply with JSON only."
)

PAIRS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
            },
        }
    },
    "required": ["pairs"],
}


def qa_messages(
    leaf: Leaf, scale: list[str], count: int, batch: int, kept: list[str]
) -> list[dict[str, str]]:
    """Ask for ``count`` diverse question-answer pairs of the task type ``leaf``."""
    diff = leaf.path[2]
    lines = [
        *leaf_profile(leaf, scale),
        "",
        f"Batch {batch}: write {count} new question-answer pairs of exactly this task type "
        f"and difficulty ({diff.name}).",
        "Make them diverse: different topics, phrasings, lengths and settings; each question "
        "is self-contained, as a real user would send it (include any text, data or code "
        "it refers to).",
        "Each answer is a correct reference answer a grader can compare a model's answer "
        "against: complete, with the final result stated explicitly.",
    ]
    lines.extend(avoid_lines(kept))
    lines.append(
        '\nReply with a JSON object {"pairs": [{"question": "...", "answer": "..."}, ...]}.'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def leaf_profile(leaf: Leaf, scale: list[str]) -> list[str]:
    """The three task profiles of a leaf and its subcategory's difficulty scale."""
    domain, sub, diff = leaf.path
    return [
        f"Domain: {domain.name} - {domain.definition}",
        f"Subcategory: {sub.name} - {sub.definition} (example: {sub.example})",
        f"Difficulty: {diff.name} - {diff.definition} (example: {diff.example})",
        f"The difficulty scale of this subcategory, easiest first: {', '.join(scale)}.",
    ]


def avoid_lines(kept: list[str]) -> list[str]:
    """Quote back (some of) the questions already kept, so the generator avoids repeats."""
    if not kept:
        return []
    shown = kept[-AVOID_LIMIT:]
    earlier = len(kept) - len(shown)
    return [
        f"Do not repeat or paraphrase the {len(kept)} questions already written"
        + (f" ({earlier} earlier ones not shown)" if earlier else "")
        + ", for instance:",
        *(f"- {' '.join(q.split())[:AVOID_CHARS]}" for q in shown),
    ]


def _text(item: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_pairs(data: Any) -> list[tuple[str, str]]:
    """``{"pairs": [{"question", "answer"}]}`` (or a bare list) -> [(question, answer)].

    Items missing a question or an answer are skipped; a reply without any usable pair
    raises ValueError (sent back to the model by ``ask_json``).
    """
    items: Any = data
    if isinstance(data, dict):
        items = data.get("pairs")
        if not isinstance(items, list):
            lists = [v for v in data.values() if isinstance(v, list)]
            items = lists[0] if len(lists) == 1 else None
    if not isinstance(items, list):
        raise ValueError('expected a JSON object with a "pairs" list')
    pairs = []
    for item in items:
        if not isinstance(item, dict):
            continue
        question = _text(item, ("question", "q", "query"))
        answer = _text(item, ("answer", "reference", "reference_answer", "a"))
        if question and answer:
            pairs.append((question, answer))
    if not pairs:
        raise ValueError('no item has both a non-empty "question" and "answer" string')
    return pairs


@dataclass(frozen=True)
class RequestSpec:
    """How one leaf's generation requests are written and their replies read.

    ``messages(leaf, scale, count, batch, kept)`` builds a request; ``parse(reply_json)``
    returns items with at least ``question`` and ``reference`` (raising ValueError when the
    reply is unusable); ``schema`` is the (name, JSON schema) a server may enforce.
    """

    messages: Callable[[Leaf, list[str], int, int, list[str]], list[dict[str, str]]]
    parse: Callable[[Any], list[dict[str, Any]]]
    schema: tuple[str, dict[str, Any]]


def _parse_plain(data: Any) -> list[dict[str, Any]]:
    return [{"question": q, "reference": a} for q, a in parse_pairs(data)]


#: Free-text question-answer pairs, graded later by the judge (the method's default).
PLAIN_SPEC = RequestSpec(qa_messages, _parse_plain, ("qa_pairs", PAIRS_SCHEMA))
