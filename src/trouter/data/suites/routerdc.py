"""RouterDC split 2 (7 open 7B-8B models, no cost).

In-distribution tasks (mmlu, gsm8k, cmmlu, arc_challenge, humaneval) ship train and test
files and keep that split. Out-of-distribution tasks (MATH_prealgebra, mbpp, ceval,
javascript) ship one file each; all their rows are test rows, as in RouterDC, where they
are never trained on (the cold-start setting tests on them). The folder also holds
``arc_easy_{train,test}.json``, which RouterDC's split-2 results do not use; it is left
out so that figures stay comparable with the paper.

Scores are the release's per-model values in [0, 1] (soft for multiple choice). There is
no cost data: cost is 0 everywhere and ``cost_source`` is "none", so cost-weighted
scenarios reduce to performance on this suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trouter.config import MalformedDataError
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites._common import read_json, records, require_dir, score_value

FOLDER = "routerdc_split2"
# task -> (train file, test file)
IN_DISTRIBUTION = {
    "mmlu": ("mmlu_train.json", "mmlu_test.json"),
    "gsm8k": ("gsm8k-train.json", "gsm8k-test.json"),
    "cmmlu": ("cmmlu_train.json", "cmmlu_test.json"),
    "arc_challenge": ("arc_challenge_train.json", "arc_challenge_test.json"),
    "humaneval": ("humaneval_train.json", "humaneval_test.json"),
}
OUT_OF_DISTRIBUTION = {
    "MATH_prealgebra": "MATH_prealgebra.json",
    "mbpp": "mbpp.json",
    "ceval": "ceval.json",
    "javascript": "javascript.json",
}


def _files() -> list[tuple[str, str, str]]:
    """(task, split, file name) in a fixed order."""
    files = []
    for task, (train, test) in IN_DISTRIBUTION.items():
        files += [(task, "train", train), (task, "test", test)]
    files += [(task, "test", name) for task, name in OUT_OF_DISTRIBUTION.items()]
    return files


def load(root: Path) -> RoutingDataset:
    folder = require_dir(root / FOLDER)
    models: list[str] | None = None
    ids, texts, tasks, splits, perf = [], [], [], [], []
    for task, split, name in _files():
        path = folder / name
        for index, row in enumerate(records(path, read_json(path), ("question", "scores"))):
            scores = row["scores"]
            if not isinstance(scores, dict) or not scores:
                raise MalformedDataError(f"{path}, item {index}: 'scores' is not an object")
            if models is None:
                models = sorted(scores)
            if sorted(scores) != models:
                raise MalformedDataError(
                    f"{path}, item {index}: scored models {sorted(scores)} differ from {models}"
                )
            perf.append([score_value(path, f"item {index}", m, scores[m]) for m in models])
            ids.append(f"routerdc/{Path(name).stem}/{index}")
            texts.append(str(row["question"]))
            tasks.append(task)
            splits.append(split)
    assert models is not None
    tasks_arr = np.asarray(tasks, dtype=object)
    performance = np.asarray(perf, dtype=float)
    return RoutingDataset(
        name="routerdc",
        query_ids=np.asarray(ids, dtype=object),
        texts=texts,
        tasks=tasks_arr,
        benchmarks=tasks_arr.copy(),
        models=[ModelInfo(m) for m in models],
        performance=performance,
        cost=np.zeros_like(performance),
        splits=np.asarray(splits, dtype=object),
        cost_source="none",
    )
