"""Synthetic questions that come with a mechanical grader, so no judge model is needed.

A judge written by a 1.5B model is often wrong, and so are free-text references; where the
task type allows it, the generator is asked instead for a question whose answer can be
*checked*:

- ``number`` (mathematics): a problem whose answer is one number;
- ``code`` (programming): a Python function task with the generator's reference solution
  and assert-based tests; the item is kept only if the reference passes its own tests in
  the sandbox (a generator that cannot solve its own task writes no item);
- ``choice`` (knowledge, science, commonsense): four options and one correct letter.

:func:`pool_prompt` is what a pool model is asked for an item; the answer is scored by
:mod:`trouter.labelling.graders` (a later pipeline stage).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from trouter.sandbox import SandboxError, apasses, passes
from trouter.synthesis.prompts import SYSTEM, RequestSpec, avoid_lines, leaf_profile
from trouter.taxonomy.model import Leaf

#: Answer format by taxonomy domain; domains not listed need the LLM judge.
FORMAT_BY_DOMAIN = {
    "Mathematics": "number",
    "Programming": "code",
    "Science": "choice",
    "Commonsense Reasoning": "choice",
    "World Knowledge": "choice",
}
LETTERS = "ABCD"
#: Wall-clock seconds a reference solution may take to pass its own tests.
SOLUTION_TIMEOUT_S = 15.0
log = logging.getLogger(__name__)
NUMBER_ONLY = re.compile(r"^\s*-?\d[\d,]*(?:\.\d+)?\s*$")
FUNCTION_NAME = re.compile(r"^[A-Za-z_]\w*$")

#: A numeric answer *type* keeps a small generator from writing prose into the answer:
#: servers that compile the schema into a grammar (llama.cpp) enforce it. (String length
#: caps would too, but llama.cpp expands them into grammars too large to parse.)
_TEXT = {"type": "string"}
_ITEM_FIELDS: dict[str, dict[str, Any]] = {
    "number": {
        "question": _TEXT,
        "solution": _TEXT,
        "answer": {"type": "number"},
    },
    "code": {
        "question": _TEXT,
        "function_name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "solution": _TEXT,
        "tests": {
            "type": "array",
            "items": _TEXT,
            "minItems": 2,
            "maxItems": 5,
        },
    },
    "choice": {
        "question": _TEXT,
        "options": {
            "type": "array",
            "items": _TEXT,
            "minItems": 4,
            "maxItems": 4,
        },
        "answer": {"type": "string", "enum": list(LETTERS)},
    },
}

_INSTRUCTIONS = {
    "number": (
        "Each item: a self-contained problem whose answer is a single number; a short "
        "worked solution; and the final answer as a bare number (digits only, no units)."
    ),
    "code": (
        "Each item: a Python function task that states the function's name, parameters and "
        "return value; the function name; a correct reference solution (the whole function, "
        "standard library only); and 3 to 5 tests, each one line `assert name(...) == ...`."
    ),
    "choice": (
        "Each item: a multiple-choice question with exactly four options (text only, no "
        "letters) of which exactly one is correct, and the letter (A-D) of the correct one."
    ),
}


def answer_format(leaf: Leaf) -> str | None:
    """The mechanical answer format of ``leaf``'s task type, or None (judge needed)."""
    return FORMAT_BY_DOMAIN.get(leaf.domain)


def items_schema(fmt: str, count: int = 8) -> dict[str, Any]:
    fields = _ITEM_FIELDS[fmt]
    item = {"type": "object", "properties": fields, "required": list(fields)}
    items = {"type": "array", "items": item, "minItems": 1, "maxItems": count}
    return {"type": "object", "properties": {"items": items}, "required": ["items"]}


def graded_messages(
    leaf: Leaf, fmt: str, scale: list[str], count: int, batch: int, kept: list[str]
) -> list[dict[str, str]]:
    """Ask for ``count`` gradable items of ``leaf``'s task type in answer format ``fmt``."""
    lines = [
        *leaf_profile(leaf, scale),
        "",
        f"Batch {batch}: write {count} new, diverse items of exactly this task type and "
        f"difficulty ({leaf.difficulty}). Each question is self-contained, as a real user "
        "would send it.",
        _INSTRUCTIONS[fmt],
        *avoid_lines(kept),
        f'\nReply with a JSON object {{"items": [...]}} whose items have the fields '
        f"{', '.join(_ITEM_FIELDS[fmt])}.",
    ]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_items(data: Any, fmt: str) -> list[dict[str, Any]]:
    """Valid items of a reply as ``{"question", "reference", "format", "extra"}`` dicts.

    Invalid items are dropped (a code item whose reference fails its own tests included);
    a reply with no list at all raises ValueError so that ``ask_json`` asks again. Runs the
    sandbox in this thread: from async code use :func:`aparse_items`.
    """
    candidates = _candidates(data, fmt)
    return [item for item, program in candidates if program is None or _passes(program)]


async def aparse_items(data: Any, fmt: str) -> list[dict[str, Any]]:
    """:func:`parse_items` with the code items' sandbox runs off the event loop (on the
    sandbox's bounded pool), concurrently."""
    candidates = _candidates(data, fmt)
    verdicts = await asyncio.gather(
        *(_apasses(program) for _, program in candidates if program is not None)
    )
    results = iter(verdicts)
    return [item for item, program in candidates if program is None or next(results)]


def _passes(program: str) -> bool:
    try:
        return passes(program, SOLUTION_TIMEOUT_S)
    except SandboxError as err:  # the item is dropped; the run goes on
        log.warning("reference solution not checked, item dropped: %s", err)
        return False


async def _apasses(program: str) -> bool:
    try:
        return await apasses(program, SOLUTION_TIMEOUT_S)
    except SandboxError as err:
        log.warning("reference solution not checked, item dropped: %s", err)
        return False


def _candidates(data: Any, fmt: str) -> list[tuple[dict[str, Any], str | None]]:
    """(item, program that must pass in the sandbox or None) per well-formed item."""
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError('expected a JSON object with an "items" list')
    parsed = [_parse_one(item, fmt) for item in items if isinstance(item, dict)]
    return [found for found in parsed if found is not None]


def _parse_one(item: dict[str, Any], fmt: str) -> tuple[dict[str, Any], str | None] | None:
    question = str(item.get("question") or "").strip()
    if not question:
        return None
    if fmt == "number":
        raw = item.get("answer")
        if isinstance(raw, bool):
            return None
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        answer = str(raw if raw is not None else "").strip().replace(",", "")
        if not NUMBER_ONLY.match(answer):
            return None
        return {"question": question, "reference": answer, "format": fmt,
                "extra": {"solution": str(item.get("solution") or "")}}, None  # fmt: skip
    if fmt == "code":
        name = str(item.get("function_name") or "").strip()
        solution = str(item.get("solution") or "")
        tests = [t.strip() for t in item.get("tests") or [] if isinstance(t, str)]
        tests = [t for t in tests if t.startswith("assert ") and name in t]
        if not FUNCTION_NAME.match(name) or len(tests) < 2 or f"def {name}" not in solution:
            return None
        test_code = "\n".join(tests)
        # kept only if the generator's own solution passes its tests (checked by the caller)
        return {"question": question, "reference": solution, "format": fmt,
                "extra": {"function_name": name, "tests": test_code}}, (
            solution + "\n\n" + test_code + "\n")  # fmt: skip
    if fmt == "choice":
        options = [str(o).strip() for o in item.get("options") or []]
        letter = str(item.get("answer") or "").strip().upper()[:1]
        if len(options) != 4 or not all(options) or len(set(options)) < 4 or letter not in LETTERS:
            return None
        return {"question": question, "reference": letter, "format": fmt,
                "extra": {"options": options}}, None  # fmt: skip
    raise ValueError(f"unknown answer format {fmt!r}")


def pool_prompt(item: dict[str, Any]) -> str:
    """The message a pool model is sent for an item (the reference is never shown)."""
    fmt, question, extra = item["format"], item["question"], item["extra"]
    if fmt == "number":
        return (
            f"{question}\n\nSolve step by step, then give the final answer on the last line "
            "as: #### <number>"
        )
    if fmt == "code":
        return (
            f"{question}\n\nWrite the Python function `{extra['function_name']}`. Reply with "
            "the whole function in one ```python code block."
        )
    options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(extra["options"]))
    return (
        f"{question}\n\n{options}\n\nReply with the letter of the correct option on the "
        "last line as: Answer: <letter>"
    )


def graded_spec(leaf: Leaf) -> RequestSpec:
    """The :class:`RequestSpec` for ``leaf``'s gradable format (for ``asynthesize_qa``)."""
    fmt = answer_format(leaf)
    if fmt is None:
        raise ValueError(f"leaf {leaf.id!r} has no mechanical answer format; use the judge")

    def messages(leaf: Leaf, scale: list[str], count: int, batch: int, kept: list[str]):
        return graded_messages(leaf, fmt, scale, count, batch, kept)

    # the parse returns a coroutine: ask_json awaits it, so the sandbox runs off the loop
    return RequestSpec(
        messages, lambda data: aparse_items(data, fmt), (f"{fmt}_items", items_schema(fmt))
    )
