"""Programmatic graders: score an answer without a judge model wherever the task allows.

Three answer formats can be checked mechanically, for real and synthetic questions alike:

- ``number``: the final number of the answer (after ``####`` when the model wrote one) must
  equal the reference number;
- ``code``: the answer's Python code must pass the question's tests in the sandbox;
- ``choice``: the letter the answer commits to must be the reference letter.

Everything else needs the LLM judge (:mod:`trouter.labelling.judge`).
"""

from __future__ import annotations

import re

from trouter.sandbox import passes

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
#: "Answer: B", "answer is (B)", "**B**" ... the last committed letter wins.
CHOICE = re.compile(
    r"(?:answer\s*(?:is)?\s*[:\-]?\s*\(?|^\s*\(?|\*\*)([A-D])\b[).:*]?", re.I | re.M
)
FORMATS = ("number", "code", "choice")


def final_number(text: str) -> str | None:
    """The answer number: after '####' if present, else the last number in the text."""
    tail = text.split("####")[-1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    if not numbers:
        return None
    return numbers[-1 if "####" not in text else 0].replace(",", "").rstrip(".")


def grade_number(answer: str, reference: str) -> float:
    got = final_number(answer)
    want = final_number(reference)
    if got is None or want is None:
        return 0.0
    try:
        return float(abs(float(got) - float(want)) < 1e-6 * max(1.0, abs(float(want))))
    except ValueError:
        return 0.0


def extract_code(completion: str, prompt: str = "") -> str:
    """The program to test: the longest fenced block if any, else the whole reply; prefixed
    with ``prompt`` (a function stub) when the model wrote only the function body."""
    blocks = CODE_BLOCK.findall(completion)
    code = max(blocks, key=len) if blocks else completion
    header = prompt.split("def ")[0]  # the stub's imports
    if re.search(r"^\s*def \w+", code, re.MULTILINE):
        return header + "\n" + code
    return prompt + code


def grade_code(completion: str, tests: str, prompt: str = "", timeout_s: float = 15.0) -> float:
    """1.0 when the completion's code followed by ``tests`` runs without error."""
    return (
        1.0 if passes(extract_code(completion, prompt) + "\n\n" + tests + "\n", timeout_s) else 0.0
    )


def extract_choice(answer: str) -> str | None:
    """The option letter the answer commits to (the last one stated), upper-case."""
    found = CHOICE.findall(answer)
    if found:
        return found[-1].upper()
    bare = re.findall(r"\b([A-D])\b", answer)
    return bare[-1].upper() if bare else None


def grade_choice(answer: str, reference: str) -> float:
    return float(extract_choice(answer) == reference.strip().upper()[:1])
