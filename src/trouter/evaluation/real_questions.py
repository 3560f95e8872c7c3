"""Real benchmark questions with programmatic graders (no judge model needed).

GSM8K answers are graded by the final number; HumanEval completions by running the
problem's own unit tests in a separate, resource-limited Python process with a timeout.
The GSM8K test set and HumanEval ship inside the package (MIT, notices beside them in
``trouter/data/questions/``), so no data directory is needed.
"""

from __future__ import annotations

import gzip
import json
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trouter.config import MalformedDataError

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def packaged_question_file(name: str) -> Path:
    """A file of the packaged question sets: ``gsm8k_test.jsonl`` or ``HumanEval.jsonl.gz``."""
    return Path(str(resources.files("trouter.data") / "questions" / name))


@dataclass(frozen=True)
class RealQuestion:
    id: str
    benchmark: str  # "gsm8k" or "humaneval"
    prompt: str  # what the pool model is asked
    reference: str  # GSM8K: the final number; HumanEval: the task id (tests are in `extra`)
    extra: dict


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            lines = fh.readlines()
    except FileNotFoundError as err:
        raise MalformedDataError(f"{path}: file not found") from err
    except UnicodeDecodeError as err:
        raise MalformedDataError(f"{path}: not UTF-8 text: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MalformedDataError(f"{path}: line {number}: {err}") from err
    return rows


def load_gsm8k(limit: int | None = None) -> list[RealQuestion]:
    """The first ``limit`` GSM8K test questions (all 1319 when None)."""
    path = packaged_question_file("gsm8k_test.jsonl")
    questions = []
    for index, row in enumerate(_read_jsonl(path)[:limit]):
        if "####" not in row.get("answer", ""):
            raise MalformedDataError(f"{path}: row {index + 1} has no '#### answer'")
        final = row["answer"].split("####")[-1].strip().replace(",", "")
        prompt = (
            f"{row['question']}\n\nSolve step by step, then give the final answer "
            "on the last line as: #### <number>"
        )
        questions.append(RealQuestion(f"gsm8k-test-{index}", "gsm8k", prompt, final, {}))
    return questions


def load_humaneval(limit: int | None = None) -> list[RealQuestion]:
    """The first ``limit`` HumanEval problems (all 164 when None)."""
    path = packaged_question_file("HumanEval.jsonl.gz")
    questions = []
    for row in _read_jsonl(path)[:limit]:
        prompt = (
            "Complete the following Python function. Reply with the whole function in "
            f"one ```python code block.\n\n```python\n{row['prompt']}```"
        )
        questions.append(
            RealQuestion(
                row["task_id"],
                "humaneval",
                prompt,
                row["task_id"],
                {"prompt": row["prompt"], "test": row["test"], "entry_point": row["entry_point"]},
            )
        )
    return questions


def final_number(text: str) -> str | None:
    """The answer number: after '####' if present, else the last number in the text."""
    tail = text.split("####")[-1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    if not numbers:
        return None
    return numbers[-1 if "####" not in text else 0].replace(",", "").rstrip(".")


def grade_gsm8k(answer: str, reference: str) -> float:
    got = final_number(answer)
    if got is None:
        return 0.0
    try:
        return float(abs(float(got) - float(reference)) < 1e-6)
    except ValueError:
        return 0.0


def extract_code(completion: str, prompt: str) -> str:
    """The program to test: a fenced block if any; prefixed with the prompt when the model
    wrote only the function body."""
    blocks = CODE_BLOCK.findall(completion)
    code = max(blocks, key=len) if blocks else completion
    header = prompt.split("def ")[0]  # the problem's imports
    if re.search(r"^\s*def \w+", code, re.MULTILINE):
        return header + "\n" + code
    return prompt + code


def _limit_resources() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))


def grade_humaneval(completion: str, extra: dict, timeout_s: float = 15.0) -> float:
    """1.0 when the problem's tests pass against the completion, else 0.0."""
    program = (
        extract_code(completion, extra["prompt"])
        + "\n\n"
        + extra["test"]
        + f"\n\ncheck({extra['entry_point']})\n"
    )
    with tempfile.TemporaryDirectory(prefix="trouter-humaneval-") as workdir:
        try:
            result = subprocess.run(
                [sys.executable, "-I", "-c", program],
                cwd=workdir,
                capture_output=True,
                timeout=timeout_s,
                preexec_fn=_limit_resources,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return 0.0
    return 1.0 if result.returncode == 0 else 0.0


def grade(question: RealQuestion, answer: str) -> float:
    if question.benchmark == "gsm8k":
        return grade_gsm8k(answer, question.reference)
    if question.benchmark == "humaneval":
        return grade_humaneval(answer, question.extra)
    raise ValueError(f"no grader for benchmark {question.benchmark!r}")
