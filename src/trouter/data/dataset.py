"""The one dataset object of trouter: queries x models x {performance, cost}."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class ModelInfo:
    """A pool model. Prices are USD per million tokens where known."""

    name: str
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None


@dataclass
class RoutingDataset:
    """Per-(query, model) performance in [0, 1] and raw cost, with splits.

    Missing cells are NaN ("masked"): they are never treated as a score of 0. ``benchmarks``
    names the group over which cost is min-max normalised (the method normalises per
    benchmark, over all models and splits); ``tasks`` is the finer task label used for
    leave-one-task-out. ``leaf_ids`` optionally carries a task-type prior per query (the
    taxonomy leaf that generated a synthetic question).
    """

    name: str
    query_ids: np.ndarray
    texts: list[str]
    tasks: np.ndarray
    benchmarks: np.ndarray
    models: list[ModelInfo]
    performance: np.ndarray
    cost: np.ndarray
    splits: np.ndarray
    cost_source: str = "usd-per-call"
    leaf_ids: np.ndarray | None = None
    normalised_cost: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n, m = len(self.texts), len(self.models)
        self.query_ids = np.asarray(self.query_ids, dtype=object)
        self.tasks = np.asarray(self.tasks, dtype=object)
        self.benchmarks = np.asarray(self.benchmarks, dtype=object)
        self.splits = np.asarray(self.splits, dtype=object)
        self.performance = np.asarray(self.performance, dtype=float)
        self.cost = np.asarray(self.cost, dtype=float)
        for label, arr in (
            ("query_ids", self.query_ids),
            ("tasks", self.tasks),
            ("benchmarks", self.benchmarks),
            ("splits", self.splits),
        ):
            if arr.shape != (n,):
                raise ValueError(f"{self.name}: {label} has shape {arr.shape}, expected ({n},)")
        for label, arr in (("performance", self.performance), ("cost", self.cost)):
            if arr.shape != (n, m):
                raise ValueError(f"{self.name}: {label} has shape {arr.shape}, expected ({n}, {m})")
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"{self.name}: unknown split names {sorted(unknown)}")
        names = self.model_names
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate model names in {names}")
        if self.normalised_cost is None:
            self.normalised_cost = self._normalise_cost()

    # ----- views -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.texts)

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    @property
    def observed(self) -> np.ndarray:
        """True where both performance and cost of a cell are known."""
        return ~(np.isnan(self.performance) | np.isnan(self.cost))

    @property
    def masked_cells(self) -> int:
        return int((~self.observed).sum())

    @property
    def complete_rows(self) -> np.ndarray:
        return self.observed.all(axis=1)

    def subset(self, index: np.ndarray | Sequence[int]) -> RoutingDataset:
        """Rows selected by a boolean mask or integer index; normalised cost is kept as is."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            query_ids=self.query_ids[idx],
            texts=[self.texts[i] for i in idx],
            tasks=self.tasks[idx],
            benchmarks=self.benchmarks[idx],
            performance=self.performance[idx],
            cost=self.cost[idx],
            splits=self.splits[idx],
            leaf_ids=None if self.leaf_ids is None else self.leaf_ids[idx],
            normalised_cost=self.normalised_cost[idx],
        )

    def split(self, name: str) -> RoutingDataset:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.subset(self.splits == name)

    def select_models(self, names: Sequence[str]) -> RoutingDataset:
        """Keep only the named models, in the given order.

        When models are dropped, cost is re-normalised per benchmark over the kept models
        (and this dataset's rows): normalised cost is relative to the pool the routing
        chooses from, so a cost of 1 is the most expensive *remaining* model. A pure
        reordering of the same pool keeps the normalisation as it is.
        """
        missing = [n for n in names if n not in self.model_names]
        if missing:
            raise KeyError(f"{self.name}: unknown models {missing}; pool is {self.model_names}")
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: model names repeat in {list(names)}")
        cols = [self.model_names.index(n) for n in names]
        same_pool = len(cols) == len(self.models)
        return replace(
            self,
            models=[self.models[c] for c in cols],
            performance=self.performance[:, cols],
            cost=self.cost[:, cols],
            normalised_cost=self.normalised_cost[:, cols] if same_pool else None,
        )

    def with_validation(self, fraction: float = 0.15, seed: int = 0) -> RoutingDataset:
        """Carve a validation split out of train only, stratified by task, with a fixed seed."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        splits = self.splits.copy()
        splits[splits == "validation"] = "train"
        for task in np.unique(self.tasks):
            rows = np.flatnonzero((splits == "train") & (self.tasks == task))
            n_val = int(round(len(rows) * fraction))
            if len(rows) >= 2 and n_val >= 1:
                splits[rng.choice(rows, size=n_val, replace=False)] = "validation"
        return replace(self, splits=splits)

    def summary(self) -> dict[str, object]:
        counts = {s: int((self.splits == s).sum()) for s in SPLITS}
        return {
            "suite": self.name,
            "queries": len(self),
            "models": len(self.models),
            "tasks": sorted(set(self.tasks)),
            "splits": counts,
            "masked_cells": self.masked_cells,
            "cost_source": self.cost_source,
        }

    # ----- internals ---------------------------------------------------------------------
    def _normalise_cost(self) -> np.ndarray:
        """Min-max normalise raw cost per benchmark over all its models and splits."""
        normalised = np.zeros_like(self.cost)
        for bench in np.unique(self.benchmarks):
            rows = self.benchmarks == bench
            block = self.cost[rows]
            finite = block[~np.isnan(block)]
            if finite.size == 0:
                normalised[rows] = np.where(np.isnan(block), np.nan, 0.0)
                continue
            low, high = finite.min(), finite.max()
            span = high - low
            normalised[rows] = (
                (block - low) / span if span > 0 else np.where(np.isnan(block), np.nan, 0.0)
            )
        return normalised


def task_order(rows: np.ndarray, task: object, seed: int) -> np.ndarray:
    """``rows`` in a seeded random order that depends on the task's name.

    Few-shot draws take prefixes of it, so the 10 shots of a task are the first 10 of its 25,
    and the same task gets the same order wherever it is drawn (evaluation folds, the guard).
    """
    rng = np.random.default_rng([seed, zlib.crc32(str(task).encode())])
    return np.asarray(rows)[rng.permutation(len(rows))]
