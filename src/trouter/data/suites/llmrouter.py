"""LLMRouter release (14 tasks, 9 open models, per-query scores in [0, 1]).

Files: ``llmrouter/dcrouter_{train,test}.json`` (``question``, ``scores`` per model),
``default_query_{train,test}.jsonl`` (the same questions with ``task_name``; joined on the
exact question text), ``default_llm.json`` (USD per 1M input / output tokens per model).
The files' own train/test split is kept. Known quirks of the release, left as they are:
119 test questions also occur in train (50 human_eval, 50 gpqa, 19 mbpp), and 6 training
questions are listed under two tasks in ``default_query_train.jsonl`` (an MMLU copy of an
ARC / OpenBookQA question); such a question takes its first listed task.

Cost: the release has no responses and no token counts, so output tokens are unknown.
The estimate is the input cost only: tokens of the question x the model's input price.
It is a lower bound of the true cost, and within one query it ranks the models by price.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trouter.config import MalformedDataError
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites._common import (
    count_tokens,
    read_json,
    read_jsonl,
    records,
    require_dir,
    score_value,
)

FOLDER = "llmrouter"


def _prices(path: Path) -> dict[str, tuple[float, float]]:
    table = read_json(path)
    if not isinstance(table, dict):
        raise MalformedDataError(f"{path}: expected a JSON object of models")
    prices = {}
    for model, entry in table.items():
        try:
            prices[model] = (float(entry["input_price"]), float(entry["output_price"]))
        except (KeyError, TypeError, ValueError) as err:
            raise MalformedDataError(
                f"{path}, model {model!r}: missing or non-numeric input_price/output_price"
            ) from err
    return prices


def _task_names(path: Path) -> dict[str, str]:
    tasks: dict[str, str] = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        if "query" not in row or "task_name" not in row:
            raise MalformedDataError(f"{path}, line {number}: missing 'query' or 'task_name'")
        tasks.setdefault(row["query"], str(row["task_name"]))
    return tasks


def load(root: Path) -> RoutingDataset:
    folder = require_dir(root / FOLDER)
    price_path = folder / "default_llm.json"
    prices = _prices(price_path)
    models: list[str] | None = None
    ids, texts, tasks, splits, perf = [], [], [], [], []
    for split in ("train", "test"):
        path = folder / f"dcrouter_{split}.json"
        task_path = folder / f"default_query_{split}.jsonl"
        rows = records(path, read_json(path), ("question", "scores"))
        task_of = _task_names(task_path)
        for index, row in enumerate(rows):
            scores = row["scores"]
            if not isinstance(scores, dict) or not scores:
                raise MalformedDataError(f"{path}, item {index}: 'scores' is not an object")
            if models is None:
                models = sorted(scores)
                unpriced = [m for m in models if m not in prices]
                if unpriced:
                    raise MalformedDataError(f"{price_path}: no price for model(s) {unpriced}")
            if sorted(scores) != models:
                raise MalformedDataError(
                    f"{path}, item {index}: scored models {sorted(scores)} differ from {models}"
                )
            question = row["question"]
            if question not in task_of:
                raise MalformedDataError(
                    f"{path}, item {index}: question not found in {task_path.name} "
                    f"(cannot name its task): {str(question)[:80]!r}"
                )
            where = f"item {index}"
            perf.append([score_value(path, where, m, scores[m]) for m in models])
            ids.append(f"llmrouter/{split}/{index}")
            texts.append(str(question))
            tasks.append(task_of[question])
            splits.append(split)
    assert models is not None
    tokens, method = count_tokens(texts)
    input_price = np.array([prices[m][0] for m in models]) / 1e6
    tasks_arr = np.asarray(tasks, dtype=object)
    return RoutingDataset(
        name="llmrouter",
        query_ids=np.asarray(ids, dtype=object),
        texts=texts,
        tasks=tasks_arr,
        benchmarks=tasks_arr.copy(),
        models=[ModelInfo(m, prices[m][0], prices[m][1]) for m in models],
        performance=np.asarray(perf, dtype=float),
        cost=np.outer(tokens, input_price),
        splits=np.asarray(splits, dtype=object),
        cost_source=(
            f"estimated, input only: {method} of the question x default_llm.json "
            "input_price (USD/1M tokens); no responses released, so output tokens are "
            "unknown and the figure is a lower bound"
        ),
    )
