"""Prompts for answering and judging, and turning a judge's reply into 1, 0.5 or 0.

The labels are only as good as this parser. A verdict that cannot be read unambiguously is
*masked* (None, with the reason recorded), never guessed and never 0: a parse failure says
nothing about the answer, and a 0 would teach the router that the model failed.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The only scores a judge may give.
SCORES = (0.0, 0.5, 1.0)

JUDGE_SYSTEM = (
    "You grade answers to questions against a reference answer. Judge only whether the "
    "candidate's final answer agrees with the reference; ignore style, length and "
    "explanations. Score 1 if it is correct and complete, 0.5 if it is partly correct "
    "(right idea or some of the required parts, but incomplete or with a minor error), "
    "0 if it is wrong, missing or does not answer the question."
)

JUDGE_TEMPLATE = """Question:
{question}

Reference answer:
{reference}

Candidate answer:
{answer}

Reply with only a JSON object of the form {{"score": S}} where S is exactly one of 1, 0.5 or 0."""

#: ``response_format`` for judges whose backend supports JSON-schema output.
JUDGE_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"score": {"type": "number", "enum": list(SCORES)}},
            "required": ["score"],
            "additionalProperties": False,
        },
    },
}

# A score token not glued to other digits or dots: 1, 1.0, 0.5, .5, 0, 0.00.
_SCORE_TOKEN = re.compile(r"(?<![\d.])(1(?:\.0+)?|0?\.50*|0(?:\.0+)?)(?![\d.]*\d)")
_LABELLED = re.compile(
    r"\b(?:score|verdict|grade|rating)\b\W{0,3}(1(?:\.0+)?|0?\.50*|0(?:\.0+)?)(?![\d.]*\d)",
    re.IGNORECASE,
)


class VerdictError(ValueError):
    """A judge reply that does not contain one unambiguous score."""


def answer_messages(question: str) -> list[dict[str, str]]:
    """What each pool model is asked: the question alone, as a user would ask it."""
    return [{"role": "user", "content": question}]


def judge_messages(question: str, reference: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": JUDGE_TEMPLATE.format(question=question, reference=reference, answer=answer),
        },
    ]


def _as_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not _SCORE_TOKEN.fullmatch(value):
            return None
        value = float(value)
    if isinstance(value, int | float) and float(value) in SCORES:
        return float(value)
    return None


def parse_verdict(text: str) -> float:
    """1.0, 0.5 or 0.0 from a judge reply; :class:`VerdictError` when unreadable.

    Accepted, in this order: a JSON object with a ``score`` (or ``verdict``/``grade``)
    field, possibly inside a code fence or prose; a reply that is just the number; a number
    right after the word score/verdict/grade/rating; a reply in which exactly one distinct
    score value appears. Anything else -- no score, several different ones, a value such
    as 0.7 -- is an error.
    """
    stripped = text.strip().strip("`").strip()
    decoder = json.JSONDecoder()
    for start in [i for i, ch in enumerate(text) if ch == "{"]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            for key in ("score", "verdict", "grade"):
                if key in value:
                    score = _as_score(value[key])
                    if score is None:
                        raise VerdictError(f"judge gave {key}={value[key]!r}, not 1, 0.5 or 0")
                    return score
    plain = _as_score(stripped.rstrip(".").strip('"'))
    if plain is not None:
        return plain
    labelled = {float(m) for m in _LABELLED.findall(text)}
    if len(labelled) == 1:
        return labelled.pop()
    if len(labelled) > 1:
        raise VerdictError(f"judge reply names several scores {sorted(labelled)}")
    found = {float(m) for m in _SCORE_TOKEN.findall(text)}
    if len(found) == 1:
        return found.pop()
    preview = " ".join(text.split())[:120]
    if not found:
        raise VerdictError(f"no score (1, 0.5 or 0) in judge reply {preview!r}")
    raise VerdictError(f"ambiguous judge reply, several scores {sorted(found)}: {preview!r}")
