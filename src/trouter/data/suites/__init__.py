"""Public routing suites as :class:`RoutingDataset` objects: ``load_suite(name)``.

Each source folder under :func:`trouter.config.data_dir` has one loader module here; the
module docstrings say how each release is read (splits, query text, how cost was
obtained). Every suite comes back with train / validation / test splits: the files' own
train/test split where there is one (a fixed-seed 70/30 split per task otherwise), and a
validation split carved from train only, stratified by task, with the run seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from trouter.config import data_dir
from trouter.data.dataset import RoutingDataset
from trouter.data.sources import require_data
from trouter.data.suites import llmrouter, routellm, routerbench, routerdc

SUITES: dict[str, str] = {
    "routerbench": "RouterBench slice: ARC-Challenge, MBPP, Winogrande; 11 models; real USD "
    "per call",
    "llmrouter": "LLMRouter: 14 tasks, 9 open models; cost estimated from question tokens x "
    "input price",
    "routerdc": "RouterDC split 2: 5 in-distribution + 4 out-of-distribution (test-only) "
    "tasks, 7 open 7B models; no cost",
    "routellm-gsm8k": "RouteLLM GSM8K: gpt-4-1106-preview vs Mixtral-8x7B; cost from "
    "response tokens x list prices",
    "routellm-mmlu": "RouteLLM MMLU (57 subjects): gpt-4-1106-preview vs Mixtral-8x7B; cost "
    "from prompt tokens x list prices",
    "routellm-mtbench": "RouteLLM MT-Bench: gpt-4-1106-preview vs Mixtral-8x7B; judge score/10; "
    "cost from conversation tokens x list prices",
}

_LOADERS: dict[str, Callable[[Path], RoutingDataset]] = {
    "routerbench": routerbench.load,
    "llmrouter": llmrouter.load,
    "routerdc": routerdc.load,
    "routellm-gsm8k": routellm.load_gsm8k,
    "routellm-mmlu": routellm.load_mmlu,
    "routellm-mtbench": routellm.load_mtbench,
}


def load_suite(name: str, seed: int = 0, validation_fraction: float = 0.15) -> RoutingDataset:
    """The suite ``name`` with its train / validation / test splits.

    ``seed`` and ``validation_fraction`` only decide which training rows become
    validation rows; the test split is fixed. Raises ``KeyError`` for an unknown name,
    :class:`~trouter.config.DataNotFoundError` naming a missing file and the
    ``trouter data fetch`` command that brings it, and
    :class:`~trouter.config.MalformedDataError` (naming file and column) for bad content.
    """
    if name not in _LOADERS:
        raise KeyError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    root = data_dir()
    require_data(name, root)
    dataset = _LOADERS[name](root)
    return dataset.with_validation(validation_fraction, seed)


def describe_suite(name: str, seed: int = 0, validation_fraction: float = 0.15) -> dict:
    """A printable summary: rows per split, tasks, models, masked cells, cost source."""
    dataset = load_suite(name, seed, validation_fraction)
    summary = dataset.summary()
    rows_per_task = {
        str(task): {
            s: int(((dataset.tasks == task) & (dataset.splits == s)).sum())
            for s in ("train", "validation", "test")
        }
        for task in summary["tasks"]
    }
    train_texts = set(np.asarray(dataset.texts, dtype=object)[dataset.splits != "test"])
    test_texts = np.asarray(dataset.texts, dtype=object)[dataset.splits == "test"]
    summary.update(
        description=SUITES[name],
        model_names=dataset.model_names,
        benchmarks=sorted(set(dataset.benchmarks)),
        rows_per_task=rows_per_task,
        cells=int(dataset.performance.size),
        total_cost_usd=float(np.nansum(dataset.cost)),
        test_texts_also_in_train=int(sum(t in train_texts for t in test_texts)),
    )
    return summary


__all__ = ["SUITES", "describe_suite", "load_suite"]
