"""The evaluation harness: build the folds of a setting, fit every router, score it.

Settings
--------
``in-domain``
    Fit on the suite's train split, with a validation split carved from train with the run
    seed; test on the test split.
``cold-start``
    Leave one task out: for each task with scorable test rows, fit on the train and
    validation rows of every *other* task (validation re-carved from them with the run seed)
    and test on the held-out task's test rows. Test rows are never trained on, so tasks that
    only have test rows (out-of-distribution tasks) are always held out. One record per task,
    plus ``task="mean"`` records averaged over tasks.
``synthetic``
    Fit on a labelled JSONL file (its own train/validation splits), test on the suite's test
    split, both restricted to the pool models they share.

Every router is fitted once per (seed, fold) and predicts once; each scenario and each point
of the cost-quality sweep only re-weights that one prediction. The oracle and best-single
routers are always evaluated too, since the gap-closed metric is measured between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trouter.data.dataset import RoutingDataset
from trouter.evaluation import metrics
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, make_router

SETTINGS = ("in-domain", "cold-start", "synthetic")
#: Routers that every experiment includes: the gap-closed metric is defined between them.
BASELINES = ("oracle", "best-single")
#: Fields averaged over held-out tasks in the cold-start ``task="mean"`` records; the
#: remaining numeric fields (counts, USD totals, seconds) are summed instead.
MEAN_FIELDS = ("utility", "performance", "cost", "aiq")
SUM_FIELDS = ("raw_cost", "n_test", "masked_rows", "fit_seconds", "predict_seconds")


@dataclass
class Fold:
    """One train/validation/test partition; ``task`` is the held-out task or ``"all"``."""

    task: str
    train: RoutingDataset
    validation: RoutingDataset | None
    test: RoutingDataset
    masked_rows: int = 0


# ----- data preparation ------------------------------------------------------------------
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


def _fold(task: str, train_rows: RoutingDataset, test: RoutingDataset) -> Fold:
    train = train_rows.split("train")
    if len(train) == 0:
        raise ValueError(f"{train_rows.name}: no training rows for fold {task!r}")
    scorable, masked = metrics.scorable_rows(test)
    return Fold(task, train, _split_or_none(train_rows, "validation"), scorable, masked)


def in_domain_folds(dataset: RoutingDataset, seed: int, validation_fraction: float) -> list[Fold]:
    """Fit on train (validation carved from train with ``seed``), test on test."""
    carved = dataset.with_validation(validation_fraction, seed)
    train_rows = carved.subset(carved.splits != "test")
    fold = _fold("all", train_rows, carved.split("test"))
    if len(fold.test) == 0:
        raise ValueError(f"{dataset.name}: no test rows without masked cells")
    return [fold]


def cold_start_folds(dataset: RoutingDataset, seed: int, validation_fraction: float) -> list[Fold]:
    """Leave-one-task-out folds, one per task with scorable test rows, in task order.

    Training rows are the train and validation rows of the other tasks only; test rows of
    any task never enter training.
    """
    tasks = sorted(set(dataset.tasks))
    if len(tasks) < 2:
        raise ValueError(
            f"{dataset.name}: leave-one-task-out needs at least 2 tasks, found {tasks}; "
            "use --setting in-domain for this suite"
        )
    folds = []
    trainable = dataset.splits != "test"
    for task in sorted(set(dataset.tasks[dataset.splits == "test"])):
        test = dataset.subset((dataset.splits == "test") & (dataset.tasks == task))
        others = dataset.subset(trainable & (dataset.tasks != task))
        if len(others) == 0:
            raise ValueError(f"{dataset.name}: no training rows outside task {task!r}")
        fold = _fold(task, others.with_validation(validation_fraction, seed), test)
        if len(fold.test):
            folds.append(fold)
    if not folds:
        raise ValueError(f"{dataset.name}: no task has test rows without masked cells")
    return folds


def shared_pool(labelled: RoutingDataset, suite: RoutingDataset) -> list[str]:
    """Models in both pools, in the suite's order; an error names both pools if < 2."""
    shared = [name for name in suite.model_names if name in set(labelled.model_names)]
    if len(shared) < 2:
        raise ValueError(
            f"the labelled file and suite {suite.name!r} share {len(shared)} pool model(s) "
            f"({shared}); need at least 2. Labelled pool: {labelled.model_names}; "
            f"suite pool: {suite.model_names}"
        )
    return shared


def _restrict(dataset: RoutingDataset, models: Sequence[str]) -> RoutingDataset:
    """Keep ``models`` and re-normalise cost over them (the pool the routing chooses from)."""
    return replace(dataset.select_models(list(models)), normalised_cost=None)


def synthetic_folds(labelled: RoutingDataset, suite: RoutingDataset) -> list[Fold]:
    """Train on the labelled file's own splits, test on the suite's test split."""
    shared = shared_pool(labelled, suite)
    fold = _fold("all", _restrict(labelled, shared), _restrict(suite, shared).split("test"))
    if len(fold.test) == 0:
        raise ValueError(f"{suite.name}: no test rows without masked cells on the shared pool")
    return [fold]


# ----- scoring -----------------------------------------------------------------------------
def _align(prediction: Prediction, names: list[str], n: int, router: str) -> Prediction:
    """Reorder a prediction's columns to the test pool's model order."""
    missing = [name for name in names if name not in prediction.models]
    if missing:
        raise ValueError(f"router {router!r} predicts no scores for test models {missing}")
    cols = [prediction.models.index(name) for name in names]
    perf, cost = np.asarray(prediction.performance), np.asarray(prediction.cost)
    if perf.shape[0] != n or cost.shape[0] != n:
        raise ValueError(f"router {router!r} returned {perf.shape[0]} rows for {n} queries")
    return Prediction(names, perf[:, cols], cost[:, cols])


def score_prediction(
    prediction: Prediction, test: RoutingDataset, scenarios: dict[str, Weights]
) -> tuple[dict[str, dict], np.ndarray]:
    """Metrics per scenario and the cost-quality curve of one prediction on ``test``."""
    per_scenario = {
        name: metrics.choice_metrics(test, prediction.choose(weights), weights)
        for name, weights in scenarios.items()
    }
    return per_scenario, metrics.cost_quality_curve(test, prediction.choose)


def evaluate_fold(
    fold: Fold,
    routers: Sequence[str],
    scenarios: dict[str, Weights],
    seed: int,
    router_params: dict[str, dict] | None = None,
    context: dict[str, Any] | None = None,
    on_router: Callable[[str], None] | None = None,
) -> list[dict]:
    """Fit, predict and score every router on one fold: one record per router x scenario.

    ``routers`` must include the :data:`BASELINES`; ``context`` fields (suite, setting) are
    copied into every record; ``on_router`` is called with each router name before it fits.
    """
    absent = [name for name in BASELINES if name not in routers]
    if absent:
        raise ValueError(f"evaluate_fold needs the baseline routers {absent} in the list")
    params = router_params or {}
    test, names = fold.test, fold.test.model_names
    results: dict[str, tuple[dict[str, dict], np.ndarray, float, float]] = {}
    for name in routers:
        if on_router:
            on_router(name)
        router = make_router(name, seed=seed, **params.get(name, {}))
        start = time.perf_counter()
        router.fit(fold.train, fold.validation)
        fitted = time.perf_counter()
        prediction = router.predict(test if router.needs_labels else list(test.texts))
        predicted = time.perf_counter()
        aligned = _align(prediction, names, len(test), name)
        per_scenario, curve = score_prediction(aligned, test, scenarios)
        results[name] = (per_scenario, curve, fitted - start, predicted - fitted)

    records = []
    for name in routers:
        per_scenario, curve, fit_s, predict_s = results[name]
        area = metrics.aiq(curve)
        for scenario, weights in scenarios.items():
            scored = per_scenario[scenario]
            gap = metrics.gap_closed(
                scored["utility"],
                results["best-single"][0][scenario]["utility"],
                results["oracle"][0][scenario]["utility"],
            )
            records.append(
                {
                    **(context or {}),
                    "router": name,
                    "task": fold.task,
                    "scenario": scenario,
                    "weights": [weights.performance, weights.cost],
                    "seed": seed,
                    **scored,
                    "gap_closed": gap,
                    "aiq": area,
                    "curve": curve.tolist(),
                    "n_test": len(test),
                    "masked_rows": fold.masked_rows,
                    "n_train": len(fold.train),
                    "n_validation": 0 if fold.validation is None else len(fold.validation),
                    "fit_seconds": fit_s,
                    "predict_seconds": predict_s,
                    "params": params.get(name, {}),
                }
            )
    return records


def mean_over_tasks(records: list[dict]) -> list[dict]:
    """``task="mean"`` records for every (router, scenario, seed) of per-task records.

    Rates (utility, performance, cost, AIQ, selection shares, curve points) are averaged
    with every task weighted equally; totals (raw cost, row counts, seconds) are summed.
    Gap closed is computed from the mean utilities, not averaged, because a task where the
    oracle barely beats best-single would otherwise dominate the mean.
    """
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record["task"] != "mean":
            key = (record["router"], record["scenario"], record["seed"])
            groups.setdefault(key, []).append(record)
    means = {}
    for key, group in groups.items():
        per_fold = ("curve", "selection", "n_train", "n_validation")
        mean = {k: v for k, v in group[0].items() if k not in per_fold}
        mean["task"] = "mean"
        mean["n_tasks"] = len(group)
        for field in MEAN_FIELDS:
            mean[field] = float(np.mean([r[field] for r in group]))
        for field in SUM_FIELDS:
            mean[field] = sum(r[field] for r in group)
        models = list(group[0]["selection"])
        mean["selection"] = {m: float(np.mean([r["selection"][m] for r in group])) for m in models}
        mean["curve"] = np.mean([r["curve"] for r in group], axis=0).tolist()
        mean["aiq_of_mean_curve"] = metrics.aiq(np.asarray(mean["curve"]))
        means[key] = mean
    for (_router, scenario, seed), mean in means.items():
        mean["gap_closed"] = metrics.gap_closed(
            mean["utility"],
            means[("best-single", scenario, seed)]["utility"],
            means[("oracle", scenario, seed)]["utility"],
        )
    return list(means.values())


# ----- the experiment ------------------------------------------------------------------------
def _with_baselines(routers: Sequence[str]) -> list[str]:
    ordered = list(BASELINES) + [name for name in routers if name not in BASELINES]
    return list(dict.fromkeys(ordered))


class _Bars:
    """Two Rich progress bars: folds (seed x held-out task) and routers within a fold."""

    def __init__(self, enabled: bool, routers: list[str]) -> None:
        self.routers = routers
        self.progress = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
        self.fold_bar = self.router_bar = None

    def __enter__(self) -> _Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_fold(self, seed: int, task: str, total_folds: int) -> None:
        if self.progress is None:
            return
        if self.fold_bar is None:
            self.fold_bar = self.progress.add_task("folds", total=total_folds)
            self.router_bar = self.progress.add_task("routers", total=len(self.routers))
        self.progress.update(self.fold_bar, description=f"seed {seed} · task {task}")
        self.progress.reset(self.router_bar, total=len(self.routers))

    def start_router(self, name: str) -> None:
        if self.progress is not None:
            done = self.routers.index(name)
            self.progress.update(self.router_bar, description=name, completed=done)

    def end_fold(self) -> None:
        if self.progress is not None:
            self.progress.update(self.router_bar, completed=len(self.routers))
            self.progress.advance(self.fold_bar)


def run_experiment(
    suite: str,
    setting: str,
    routers: list[str],
    scenarios: dict[str, Weights],
    seeds: list[int],
    train_file: Path | None = None,
    router_params: dict[str, dict] | None = None,
    progress: bool = True,
    limit: int | None = None,
    validation_fraction: float = 0.15,
) -> list[dict]:
    """Evaluate ``routers`` on ``suite`` in ``setting`` for every seed: a list of records.

    ``limit`` keeps at most that many rows per split (see :func:`limit_rows`), for quick
    runs. The oracle and best-single routers are always added (the gap-closed baseline).
    """
    from trouter.data.suites import load_suite

    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
    if not seeds:
        raise ValueError("no seeds given")
    if setting == "synthetic" and train_file is None:
        raise ValueError("the synthetic setting needs a labelled train file (--train-file)")
    names = _with_baselines(routers)
    dataset = limit_rows(load_suite(suite, seed=seeds[0]), limit)
    labelled = None
    if setting == "synthetic":
        from trouter.data.labelled import load_labelled

        labelled = limit_rows(load_labelled(Path(train_file)), limit)

    def folds_for(seed: int) -> list[Fold]:
        if setting == "in-domain":
            return in_domain_folds(dataset, seed, validation_fraction)
        if setting == "cold-start":
            return cold_start_folds(dataset, seed, validation_fraction)
        return synthetic_folds(labelled, dataset)

    context = {"suite": suite, "setting": setting}
    records: list[dict] = []
    with _Bars(progress, names) as bars:
        for seed in seeds:
            folds = folds_for(seed)
            for fold in folds:
                bars.start_fold(seed, fold.task, len(folds) * len(seeds))
                records.extend(
                    evaluate_fold(
                        fold, names, scenarios, seed, router_params, context, bars.start_router
                    )
                )
                bars.end_fold()
    if setting == "cold-start":
        records.extend(mean_over_tasks(records))
    return records
