"""Small, stratified, seeded slices of the real RouterBench suite for router tests."""

from __future__ import annotations

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.data.suites import load_suite


def stratified_slice(ds: RoutingDataset, split: str, per_task: int, seed: int) -> RoutingDataset:
    """``per_task`` random rows of each task from one split."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in sorted(set(ds.tasks)):
        idx = np.flatnonzero((ds.splits == split) & (ds.tasks == task))
        rows.extend(rng.choice(idx, size=min(per_task, len(idx)), replace=False))
    return ds.subset(np.sort(np.array(rows)))


def routerbench_slices(train: int, validation: int, test: int) -> dict[str, RoutingDataset]:
    """Per-task row counts for each split, with fixed seeds 0, 1, 2."""
    ds = load_suite("routerbench")
    sizes = {"train": train, "validation": validation, "test": test}
    return {
        split: stratified_slice(ds, split, n, seed) for seed, (split, n) in enumerate(sizes.items())
    }
