"""RouteLLM evaluation data: a strong / weak pair (gpt-4-1106-preview, Mixtral-8x7B).

Three suites, each with its own loader:

- ``routellm-gsm8k``: ``gsm8k_responses.csv``, True/False correctness and the full
  response of both models; one task ("gsm8k").
- ``routellm-mmlu``: ``mmlu/mmlu_<subject>.csv``, True/False correctness; task = subject,
  benchmark = "mmlu".
- ``routellm-mtbench``: ``mt_bench_question.jsonl`` + ``mt_bench_judgements.jsonl``;
  performance = the GPT-4 judge score / 10 averaged over the two turns (a turn without a
  judgement, or with the judge's -1 "no rating", masks the cell); task = MT-Bench category;
  query text = the first turn (what a router sees when the conversation starts).

None of these files has a train/test split, so one is fixed here: 30 % of each task's rows
go to test, drawn with a constant seed (``_common.SPLIT_SEED``), never the run seed.

Cost is estimated, since no call was billed: cl100k_base tokens (GPT-4's tokenizer, a
proxy for Mixtral's) x list prices from LiteLLM's bundled price map. gsm8k: prompt and
response tokens. mt-bench: turn 1 sends q1 and returns a1; turn 2 sends q1 + a1 + q2 and
returns a2 (answers read from the judge prompts). mmlu: no responses were released, so
input tokens only (the prompt asks for one answer letter, so output cost is small).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trouter.config import MalformedDataError
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites._common import (
    check_performance,
    count_tokens,
    fixed_split,
    price_per_mtok,
    read_csv,
    read_jsonl,
    require_dir,
)

FOLDER = "routellm"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
MODELS = (STRONG, WEAK)
# model -> (LiteLLM price-map key, public list price fallback in USD per 1M in/out tokens)
PRICE_KEYS = {
    STRONG: ("gpt-4-1106-preview", (10.0, 30.0)),
    WEAK: ("together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1", (0.6, 0.6)),
}
CONVERSATION_START = "<|The Start of Assistant A's Conversation with User|>"
CONVERSATION_END = "<|The End of Assistant A's Conversation with User|>"
ANSWER = "### Assistant A:\n"
USER = "\n\n### User:\n"


def _pool() -> tuple[list[ModelInfo], np.ndarray, np.ndarray, str]:
    """Models with prices, per-token input / output price arrays, and a provenance note."""
    infos, notes = [], []
    for model in MODELS:
        key, fallback = PRICE_KEYS[model]
        inp, out, source = price_per_mtok(key, fallback)
        infos.append(ModelInfo(model, round(inp, 6), round(out, 6)))
        notes.append(f"{model}: ${inp:g}/${out:g} per 1M in/out ({source})")
    input_price = np.array([m.input_price_per_mtok for m in infos]) / 1e6
    output_price = np.array([m.output_price_per_mtok for m in infos]) / 1e6
    return infos, input_price, output_price, "; ".join(notes)


def _correctness(path: Path, column: str, values) -> np.ndarray:
    mapping = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "": np.nan}
    out = []
    for row, value in enumerate(values, start=1):
        key = str(value).strip().lower()
        if key not in mapping:
            raise MalformedDataError(
                f"{path}, column {column!r}, data row {row}: {value!r} is not True/False"
            )
        out.append(mapping[key])
    return np.asarray(out)


def _dataset(name, ids, texts, tasks, benchmarks, perf, cost, cost_source) -> RoutingDataset:
    infos, *_ = _pool()
    return RoutingDataset(
        name=name,
        query_ids=np.asarray(ids, dtype=object),
        texts=list(texts),
        tasks=np.asarray(tasks, dtype=object),
        benchmarks=np.asarray(benchmarks, dtype=object),
        models=infos,
        performance=perf,
        cost=cost,
        splits=fixed_split(tasks),
        cost_source=cost_source,
    )


def load_gsm8k(root: Path) -> RoutingDataset:
    path = require_dir(root / FOLDER) / "gsm8k_responses.csv"
    responses = [f"{m}_response" for m in MODELS]
    frame = read_csv(path, ["prompt", *MODELS, *responses])
    perf = np.column_stack([_correctness(path, m, frame[m]) for m in MODELS])
    _, input_price, output_price, prices = _pool()
    prompt_tokens, method = count_tokens(list(frame["prompt"]))
    out_tokens = np.column_stack([count_tokens(list(frame[c]))[0] for c in responses])
    cost = prompt_tokens[:, None] * input_price + out_tokens * output_price
    n = len(frame)
    return _dataset(
        "routellm-gsm8k",
        [f"routellm-gsm8k/{i}" for i in range(n)],
        frame["prompt"],
        ["gsm8k"] * n,
        ["gsm8k"] * n,
        perf,
        cost,
        f"estimated: {method} of prompt (input) and released response (output) x {prices}",
    )


def load_mmlu(root: Path) -> RoutingDataset:
    folder = require_dir(require_dir(root / FOLDER) / "mmlu")
    files = sorted(folder.glob("mmlu_*.csv"))
    if not files:
        raise MalformedDataError(f"{folder}: no mmlu_<subject>.csv files")
    ids, texts, tasks, perf = [], [], [], []
    for path in files:
        frame = read_csv(path, ["prompt", *MODELS])
        subject = path.stem.removeprefix("mmlu_")
        ids += [f"routellm-mmlu/{subject}/{i}" for i in range(len(frame))]
        texts += list(frame["prompt"])
        tasks += [subject] * len(frame)
        perf.append(np.column_stack([_correctness(path, m, frame[m]) for m in MODELS]))
    _, input_price, _, prices = _pool()
    tokens, method = count_tokens(texts)
    return _dataset(
        "routellm-mmlu",
        ids,
        texts,
        tasks,
        ["mmlu"] * len(texts),
        np.vstack(perf),
        np.outer(tokens, input_price),
        f"estimated, input only: {method} of the prompt x input price ({prices}); "
        "no responses released, so output cost is omitted (a lower bound)",
    )


def _answers_from_judge_prompt(prompt: str) -> tuple[str, str] | None:
    """The model's two answers, read from a turn-2 ("multi-turn") judge prompt."""
    start, end = prompt.find(CONVERSATION_START), prompt.rfind(CONVERSATION_END)
    if start < 0 or end < 0:
        return None
    parts = prompt[start + len(CONVERSATION_START) : end].split(ANSWER)
    if len(parts) != 3:
        return None
    first = parts[1].rsplit(USER, 1)[0]
    return first.strip(), parts[2].strip()


def load_mtbench(root: Path) -> RoutingDataset:
    folder = require_dir(root / FOLDER)
    q_path, j_path = folder / "mt_bench_question.jsonl", folder / "mt_bench_judgements.jsonl"
    questions = read_jsonl(q_path)
    for number, q in enumerate(questions, start=1):
        turns = q.get("turns")
        if (
            "question_id" not in q
            or "category" not in q
            or not isinstance(turns, list)
            or len(turns) != 2
        ):
            raise MalformedDataError(
                f"{q_path}, line {number}: needs question_id, category and two turns"
            )
    scores: dict[tuple[int, str, int], float] = {}
    answers: dict[tuple[int, str], tuple[str, str]] = {}
    for number, j in enumerate(read_jsonl(j_path), start=1):
        try:
            key = (int(j["question_id"]), str(j["model"]), int(j["turn"]))
            score = float(j["score"])
        except (KeyError, TypeError, ValueError) as err:
            raise MalformedDataError(
                f"{j_path}, line {number}: needs numeric question_id, turn, score and a model"
            ) from err
        if score != -1 and not 1 <= score <= 10:
            raise MalformedDataError(f"{j_path}, line {number}: score {score} not in 1..10")
        scores[key] = np.nan if score == -1 else score / 10.0
        if key[2] == 2 and (pair := _answers_from_judge_prompt(str(j.get("user_prompt", "")))):
            answers[key[:2]] = pair
    _, input_price, output_price, prices = _pool()
    q1 = [q["turns"][0] for q in questions]
    q2 = [q["turns"][1] for q in questions]
    perf = np.full((len(questions), len(MODELS)), np.nan)
    cost = np.full_like(perf, np.nan)
    t_q1, method = count_tokens(q1)
    t_q2, _ = count_tokens(q2)
    for col, model in enumerate(MODELS):
        for row, q in enumerate(questions):
            turn_scores = [scores.get((int(q["question_id"]), model, t), np.nan) for t in (1, 2)]
            perf[row, col] = np.mean(turn_scores)  # NaN if a turn is missing
        pairs = [answers.get((int(q["question_id"]), model)) for q in questions]
        have = np.array([p is not None for p in pairs])
        t_a1, _ = count_tokens([p[0] if p else "" for p in pairs])
        t_a2, _ = count_tokens([p[1] if p else "" for p in pairs])
        inputs = t_q1 + (t_q1 + t_a1 + t_q2)
        cost[:, col] = np.where(
            have, inputs * input_price[col] + (t_a1 + t_a2) * output_price[col], np.nan
        )
    check_performance(j_path, "score", perf)
    categories = [str(q["category"]) for q in questions]
    return _dataset(
        "routellm-mtbench",
        [f"routellm-mtbench/{q['question_id']}" for q in questions],
        q1,
        categories,
        ["mt-bench"] * len(questions),
        perf,
        cost,
        f"estimated: {method}; turn 1 in = q1, out = a1; turn 2 in = q1 + a1 + q2, out = a2 "
        f"(answers read from the judge prompts) x {prices}",
    )
