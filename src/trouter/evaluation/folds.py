"""The train / validation / test partitions of every evaluation setting.

Settings
--------
``in-domain``
    Fit on the suite's train split, with a validation split carved from train with the run
    seed; test on the test split.
``cold-start``
    Leave one task out: for each task with scorable test rows, fit on the train and
    validation rows of every *other* task (validation re-carved from them with the run seed)
    and test on the held-out task's test rows. Test rows are never trained on, so tasks that
    only have test rows (out-of-distribution tasks) are always held out.
``few-shot``
    Leave one task out, then give the router K labelled rows of the held-out task, drawn
    with the run seed from that task's train split (nested: the 10 shots are the first 10 of
    the 25). The validation rows of the held-out task are carved from those K only (the same
    stratified fraction as for every task), never from test. K=0 is cold-start; ``all``
    gives every train row of the task (in-domain, scored on that task's test rows only).
    A task with no train split (out-of-distribution, test only) draws its shots from its test
    rows instead, and the largest shot pool of the run is removed from its test rows for
    *every* K, so that all points of a learning curve are scored on the same rows.
``synthetic`` / ``transfer``
    Fit on one source (a labelled JSONL file or a suite), test on another (a suite's test
    split, or every row of a labelled test file), both restricted to the pool models they
    share, with cost re-normalised over that pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trouter.data.dataset import RoutingDataset, task_order
from trouter.evaluation import metrics

SETTINGS = ("in-domain", "cold-start", "few-shot", "synthetic", "transfer")
#: Shots of the default few-shot learning curve; ``None`` stands for "all".
DEFAULT_SHOTS: tuple[int | None, ...] = (0, 10, 25, 50, 100)


@dataclass
class Fold:
    """One train/validation/test partition; ``task`` is the held-out task or ``"all"``.

    ``shots`` is the number of labelled rows of the test task the router may learn from:
    ``None`` when the test distribution is the training distribution (in-domain), 0 for a
    task never seen, K in the few-shot setting. Deployment-aware routers (the guard) use it
    to simulate the same situation on their own validation evidence.
    """

    task: str
    train: RoutingDataset
    validation: RoutingDataset | None
    test: RoutingDataset
    masked_rows: int = 0
    shots: int | None = None


def limit_rows(dataset: RoutingDataset, limit: int | None) -> RoutingDataset:
    """At most ``limit`` rows per split, taken round-robin over tasks in file order.

    Deterministic, and it keeps every task represented, which leave-one-task-out needs.
    """
    if limit is None:
        return dataset
    if limit < 1:
        raise ValueError(f"limit must be a positive number of rows per split, got {limit}")
    keep: list[int] = []
    for split in np.unique(dataset.splits):
        rows = np.flatnonzero(dataset.splits == split)
        tasks = dataset.tasks[rows]
        rank = np.zeros(len(rows), dtype=int)
        for task in dict.fromkeys(tasks):
            mine = tasks == task
            rank[mine] = np.arange(mine.sum())
        order = np.lexsort((rows, rank))
        keep.extend(rows[order[:limit]].tolist())
    return dataset.subset(np.sort(np.asarray(keep, dtype=int)))


def _split_or_none(dataset: RoutingDataset, name: str) -> RoutingDataset | None:
    part = dataset.split(name)
    return part if len(part) else None


def make_fold(
    task: str, train_rows: RoutingDataset, test: RoutingDataset, shots: int | None = None
) -> Fold:
    """A fold from carved train/validation rows and raw test rows (masked rows dropped)."""
    train = train_rows.split("train")
    if len(train) == 0:
        raise ValueError(f"{train_rows.name}: no training rows for fold {task!r}")
    scorable, masked = metrics.scorable_rows(test)
    return Fold(task, train, _split_or_none(train_rows, "validation"), scorable, masked, shots)


def in_domain_folds(dataset: RoutingDataset, seed: int, validation_fraction: float) -> list[Fold]:
    """Fit on train (validation carved from train with ``seed``), test on test."""
    carved = dataset.with_validation(validation_fraction, seed)
    train_rows = carved.subset(carved.splits != "test")
    fold = make_fold("all", train_rows, carved.split("test"))
    if len(fold.test) == 0:
        raise ValueError(f"{dataset.name}: no test rows without masked cells")
    return [fold]


def _check_tasks(dataset: RoutingDataset) -> None:
    tasks = sorted(set(dataset.tasks))
    if len(tasks) < 2:
        raise ValueError(
            f"{dataset.name}: leave-one-task-out needs at least 2 tasks, found {tasks}; "
            "use --setting in-domain for this suite"
        )


def few_shot_folds(
    dataset: RoutingDataset,
    seed: int,
    validation_fraction: float,
    shots: int | None,
    shot_pool: int = 0,
) -> list[Fold]:
    """Leave-one-task-out folds with ``shots`` labelled rows of the held-out task added.

    ``shots=0`` is cold-start, ``None`` adds every train row of the task. ``shot_pool`` is
    the largest K of the run: for test-only tasks that many rows are taken out of the test
    rows (for every K) to serve as shots. Test rows of the task that remain are never
    trained on.
    """
    _check_tasks(dataset)
    folds = []
    trainable = dataset.splits != "test"
    for task in sorted(set(dataset.tasks[dataset.splits == "test"])):
        own = np.flatnonzero(trainable & (dataset.tasks == task))
        test_rows = np.flatnonzero((dataset.splits == "test") & (dataset.tasks == task))
        if len(own) == 0 and shot_pool > 0:
            pool = task_order(test_rows, task, seed)
            own, test_rows = pool[:shot_pool], np.sort(pool[shot_pool:])
        else:
            own = task_order(own, task, seed)
        k = len(own) if shots is None else min(int(shots), len(own))
        others = np.flatnonzero(trainable & (dataset.tasks != task))
        if len(others) == 0:
            raise ValueError(f"{dataset.name}: no training rows outside task {task!r}")
        fit_rows = dataset.subset(np.sort(np.concatenate([others, own[:k]])))
        fit_rows.splits[:] = np.where(fit_rows.splits == "test", "train", fit_rows.splits)
        carved = fit_rows.with_validation(validation_fraction, seed)
        fold = make_fold(task, carved, dataset.subset(test_rows), shots=shots)
        if len(fold.test):
            folds.append(fold)
    if not folds:
        raise ValueError(f"{dataset.name}: no task has test rows without masked cells")
    return folds


def cold_start_folds(dataset: RoutingDataset, seed: int, validation_fraction: float) -> list[Fold]:
    """Leave-one-task-out folds, one per task with scorable test rows, in task order.

    Training rows are the train and validation rows of the other tasks only; test rows of
    any task never enter training.
    """
    return few_shot_folds(dataset, seed, validation_fraction, shots=0)


def shared_pool(source: RoutingDataset, target: RoutingDataset) -> list[str]:
    """Models in both pools, in the target's order; an error names both pools if < 2."""
    shared = [name for name in target.model_names if name in set(source.model_names)]
    if len(shared) < 2:
        raise ValueError(
            f"the training source and {target.name!r} share {len(shared)} pool model(s) "
            f"({shared}); need at least 2. Training pool: {source.model_names}; "
            f"test pool: {target.model_names}"
        )
    return shared


def restrict(dataset: RoutingDataset, models: Sequence[str]) -> RoutingDataset:
    """Keep ``models``; cost is re-normalised over them (the pool the routing chooses from)."""
    return dataset.select_models(list(models))


def transfer_folds(source: RoutingDataset, target: RoutingDataset) -> list[Fold]:
    """Train on ``source``'s train/validation rows, test on ``target``.

    The target's test split is the test set when it has one (a suite), otherwise every row
    (a labelled test file, which has no test split of its own).
    """
    shared = shared_pool(source, target)
    restricted = restrict(source, shared)
    train_rows = restricted.subset(restricted.splits != "test")
    test = restrict(target, shared)
    if (test.splits == "test").any():
        test = test.split("test")
    fold = make_fold("all", train_rows, test, shots=0)
    if len(fold.test) == 0:
        raise ValueError(f"{target.name}: no test rows without masked cells on the shared pool")
    return [fold]


#: The cold-start-from-synthetic-data setting is a transfer from the labelled file.
synthetic_folds = transfer_folds
