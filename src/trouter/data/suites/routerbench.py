"""RouterBench slice (ARC-Challenge, MBPP, Winogrande; 11 models; real USD per call).

Files: ``routerbench/<benchmark>_{train,test}.csv``. Per row: ``sample_id``, ``prompt`` (a
Python-list string), ``eval_name``, one 0/1 score column per model and
``<model>|total_cost`` (what the call cost, USD). The files' own train/test split is kept.

Query text: ARC and Winogrande prompts are 5-shot, and the five exemplars are the same
for every row of a benchmark. They carry no information about the query, and left in
they fill the 256-token window of the sentence encoder so that every ARC query would embed
alike; so the exemplar prefix shared by all rows of a benchmark is cut off and ``texts``
holds the question itself. (A prompt list with repeated elements keeps one copy.) Cost is
still the real cost of the full prompt.

Query ids: ``routerbench/<sample_id>#<row>``, where ``row`` is the release's row number
(the unnamed first column); ``sample_id`` alone repeats for 14 ARC rows.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np

from trouter.config import MalformedDataError
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.suites._common import (
    check_cost,
    check_performance,
    numeric_column,
    read_csv,
    require_dir,
)

FOLDER = "routerbench"
COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIX = "|model_response"
BASE_COLUMNS = ("sample_id", "prompt", "eval_name")


def _prompt_text(path: Path, row: int, raw: str) -> str:
    try:
        parsed = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as err:
        raise MalformedDataError(
            f"{path}, column 'prompt', data row {row + 1}: not a Python list literal ({err})"
        ) from err
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, list | tuple) or not all(isinstance(p, str) for p in parsed):
        raise MalformedDataError(
            f"{path}, column 'prompt', data row {row + 1}: expected a list of strings"
        )
    parts = list(dict.fromkeys(p for p in parsed if p.strip()))
    if not parts:
        raise MalformedDataError(f"{path}, column 'prompt', data row {row + 1}: empty prompt")
    return "\n\n".join(parts)


def strip_shared_prefix(texts: list[str], separator: str = "\n\n") -> list[str]:
    """Remove the longest prefix, ending at a ``separator``, that every text shares.

    Nothing is removed from a group of fewer than two distinct texts, and no text is left
    empty.
    """
    if len(set(texts)) < 2:
        return list(texts)
    prefix = os.path.commonprefix(texts)
    cut = prefix.rfind(separator)
    if cut < 0:
        return list(texts)
    cut += len(separator)
    if any(not t[cut:].strip() for t in texts):
        return list(texts)
    return [t[cut:] for t in texts]


def load(root: Path) -> RoutingDataset:
    folder = require_dir(root / FOLDER)
    files = sorted(folder.glob("*_train.csv")) + sorted(folder.glob("*_test.csv"))
    if not files:
        raise MalformedDataError(f"{folder}: no *_train.csv / *_test.csv files")
    models: list[str] | None = None
    ids, texts, benches, splits, perf, cost = [], [], [], [], [], []
    for path in files:
        frame = read_csv(path, BASE_COLUMNS, usecols=lambda c: not str(c).endswith(RESPONSE_SUFFIX))
        found = [c for c in frame.columns if f"{c}{COST_SUFFIX}" in frame.columns]
        if not found:
            raise MalformedDataError(f"{path}: no '<model>' + '<model>{COST_SUFFIX}' columns")
        if models is None:
            models = found
        elif sorted(found) != sorted(models):
            raise MalformedDataError(f"{path}: model columns {found} differ from {models}")
        split = "train" if path.stem.endswith("_train") else "test"
        row_numbers = frame.iloc[:, 0] if frame.columns[0] not in BASE_COLUMNS else None
        for i, (sample, raw) in enumerate(zip(frame["sample_id"], frame["prompt"], strict=True)):
            row = row_numbers.iloc[i] if row_numbers is not None else f"{path.stem}.{i}"
            ids.append(f"routerbench/{sample}#{row}")
            texts.append(_prompt_text(path, i, raw))
        benches.extend(frame["eval_name"].str.strip())
        splits.extend([split] * len(frame))
        perf.append(
            np.column_stack(
                [check_performance(path, m, numeric_column(path, m, frame[m])) for m in models]
            )
        )
        cost.append(
            np.column_stack(
                [
                    check_cost(
                        path,
                        m + COST_SUFFIX,
                        numeric_column(path, m + COST_SUFFIX, frame[m + COST_SUFFIX]),
                    )
                    for m in models
                ]
            )
        )
    if len(set(ids)) != len(ids):
        raise MalformedDataError(f"{folder}: query ids are not unique")
    benches_arr = np.asarray(benches, dtype=object)
    for bench in np.unique(benches_arr):
        rows = np.flatnonzero(benches_arr == bench)
        for row, text in zip(rows, strip_shared_prefix([texts[r] for r in rows]), strict=True):
            texts[row] = text
    return RoutingDataset(
        name="routerbench",
        query_ids=np.asarray(ids, dtype=object),
        texts=texts,
        tasks=benches_arr,
        benchmarks=benches_arr.copy(),
        models=[ModelInfo(m) for m in models],
        performance=np.vstack(perf),
        cost=np.vstack(cost),
        splits=np.asarray(splits, dtype=object),
        cost_source="routerbench: real USD per call (<model>|total_cost)",
    )
