"""The evaluation harness: fit every router on the folds of a setting, score it, aggregate.

The settings and their folds are in :mod:`trouter.evaluation.folds`. Every router is fitted
once per (seed, fold) and predicts once; each scenario and each point of the cost-quality
sweeps only re-weights that one prediction. The oracle and best-single routers are always
evaluated too, since the gap-closed metric is measured between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trouter.data.dataset import RoutingDataset
from trouter.evaluation import metrics
from trouter.evaluation.folds import (  # noqa: F401  (re-exported: the harness's public API)
    DEFAULT_SHOTS,
    SETTINGS,
    Fold,
    cold_start_folds,
    few_shot_folds,
    in_domain_folds,
    limit_rows,
    restrict,
    shared_pool,
    synthetic_folds,
    transfer_folds,
)
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, Router, decide, make_router

#: Routers that every experiment includes: the gap-closed metric is defined between them.
BASELINES = ("oracle", "best-single")
#: Fields averaged over held-out tasks in the ``task="mean"`` records (cost saved: over the
#: tasks where it is defined); the remaining numeric fields (counts, USD totals, seconds)
#: are summed instead.
MEAN_FIELDS = ("utility", "performance", "cost", "aiq")
SAVING_FIELDS = tuple(f"cost_saved_{level}" for level in metrics.SAVING_LEVELS)
SUM_FIELDS = ("raw_cost", "n_test", "masked_rows", "fit_seconds", "predict_seconds")
#: Settings whose records are per held-out task and get ``task="mean"`` records.
PER_TASK_SETTINGS = ("cold-start", "few-shot")


# ----- scoring -----------------------------------------------------------------------------
def _align(prediction: Prediction, names: list[str], n: int, router: str) -> Prediction:
    """Reorder a prediction's columns to the test pool's model order."""
    perf, cost = np.asarray(prediction.performance), np.asarray(prediction.cost)
    if perf.shape[0] != n or cost.shape[0] != n:
        raise ValueError(f"router {router!r} returned {perf.shape[0]} rows for {n} queries")
    try:
        return prediction.reorder(names)
    except ValueError as err:
        raise ValueError(f"router {router!r}: {err} (the test pool)") from None


def predict_test(router: Router, test: RoutingDataset) -> Prediction:
    """A fitted router's prediction for the test rows, columns in the test pool's order
    (what every metric of the harness is computed from, through :func:`decide`)."""
    prediction = router.predict(test if router.needs_labels else list(test.texts))
    return _align(prediction, test.model_names, len(test), router.name)


def score_prediction(
    prediction: Prediction,
    test: RoutingDataset,
    scenarios: dict[str, Weights],
    top_model: int | None = None,
) -> tuple[dict[str, dict], np.ndarray, dict[str, float]]:
    """Metrics per scenario, the cost-quality curve, and the cost saved at X% of the quality
    of pool model ``top_model`` (empty without one) of one prediction on ``test``."""
    per_scenario = {
        name: metrics.choice_metrics(test, decide(prediction, weights).choice, weights)
        for name, weights in scenarios.items()
    }
    curve = metrics.cost_quality_curve(test, prediction.choose)
    saved = {} if top_model is None else metrics.savings(test, prediction.choose, top_model)
    return per_scenario, curve, saved


def top_single_model(train: RoutingDataset) -> int:
    """The pool model with the best mean training performance: the "top model" users know."""
    return int(np.nanargmax(np.nanmean(train.performance, axis=0)))


def fit_params(name: str, fold: Fold, params: dict[str, dict]) -> dict[str, Any]:
    """A router's parameters for one fold: the user's, plus the fold's deployment situation
    (``shots``, and the task to be routed) for routers that simulate it on their own
    validation evidence."""
    from trouter.routers.base import ROUTERS

    own = dict(params.get(name, {}))
    if getattr(ROUTERS.get(name), "deployment_aware", False):
        own.setdefault("shots", fold.shots)
        if fold.shots is not None:
            # the task whose traffic is routed; its labelled rows in train are its K shots
            own.setdefault("target_task", str(fold.task))
    return own


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
    top_model = top_single_model(fold.train)
    results: dict[str, tuple[dict[str, dict], np.ndarray, dict, float, float]] = {}
    for name in routers:
        if on_router:
            on_router(name)
        router = make_router(name, seed=seed, **fit_params(name, fold, params))
        start = time.perf_counter()
        router.fit(fold.train, fold.validation)
        fitted = time.perf_counter()
        aligned = predict_test(router, test)
        predicted = time.perf_counter()
        per_scenario, curve, saved = score_prediction(aligned, test, scenarios, top_model)
        results[name] = (per_scenario, curve, saved, fitted - start, predicted - fitted)

    records = []
    for name in routers:
        per_scenario, curve, saved, fit_s, predict_s = results[name]
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
                    **saved,
                    "top_model": names[top_model],
                    "shots": fold.shots,
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
            key = (record["router"], record["scenario"], record["seed"], record.get("shots"))
            groups.setdefault(key, []).append(record)
    means = {}
    for key, group in groups.items():
        per_fold = ("curve", "selection", "n_train", "n_validation")
        mean = {k: v for k, v in group[0].items() if k not in per_fold}
        mean["task"] = "mean"
        mean["n_tasks"] = len(group)
        for field in MEAN_FIELDS:
            mean[field] = float(np.mean([r[field] for r in group]))
        for field in SAVING_FIELDS:
            values = [r[field] for r in group if r.get(field) is not None]
            finite = np.asarray(values, dtype=float)
            finite = finite[np.isfinite(finite)]
            mean[field] = float(finite.mean()) if finite.size else float("nan")
        for field in SUM_FIELDS:
            mean[field] = sum(r[field] for r in group)
        models = list(group[0]["selection"])
        mean["selection"] = {m: float(np.mean([r["selection"][m] for r in group])) for m in models}
        mean["curve"] = np.mean([r["curve"] for r in group], axis=0).tolist()
        mean["aiq_of_mean_curve"] = metrics.aiq(np.asarray(mean["curve"]))
        means[key] = mean
    for (_router, scenario, seed, shots), mean in means.items():
        mean["gap_closed"] = metrics.gap_closed(
            mean["utility"],
            means[("best-single", scenario, seed, shots)]["utility"],
            means[("oracle", scenario, seed, shots)]["utility"],
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


def _load_labelled_file(
    path: Path, limit: int | None, filters: Sequence[str] = ()
) -> RoutingDataset:
    from trouter.data.labelled import load_labelled

    return limit_rows(load_labelled(Path(path), filters=filters), limit)


def run_experiment(
    suite: str | None,
    setting: str,
    routers: list[str],
    scenarios: dict[str, Weights],
    seeds: list[int],
    train_file: Path | None = None,
    router_params: dict[str, dict] | None = None,
    progress: bool = True,
    limit: int | None = None,
    validation_fraction: float = 0.15,
    shots: Sequence[int | None] = DEFAULT_SHOTS,
    test_file: Path | None = None,
    train_filters: Sequence[str] = (),
) -> list[dict]:
    """Evaluate ``routers`` in ``setting`` for every seed (and every K of ``shots`` in the
    few-shot setting): a list of records, each carrying ``shots``.

    ``suite`` is the data of in-domain, cold-start and few-shot runs, the test suite of the
    synthetic setting (trained on ``train_file``), and in the transfer setting the training
    source unless ``train_file`` is given (tested on ``test_file``). ``limit`` keeps at most
    that many rows per split (see :func:`limit_rows`), for quick runs. ``train_filters``
    keeps only the ``train_file`` rows that pass those generator-quality filters
    (:mod:`trouter.data.label_filters`). The oracle and
    best-single routers are always added (the gap-closed baseline).
    """
    from trouter.data.suites import load_suite

    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
    if not seeds:
        raise ValueError("no seeds given")
    if setting == "synthetic" and (train_file is None or suite is None):
        raise ValueError("the synthetic setting needs a labelled train file and a test suite")
    if setting == "transfer" and (test_file is None or (train_file is None) == (suite is None)):
        raise ValueError("the transfer setting needs --test-file and one of --train-file/--suite")
    if setting not in ("synthetic", "transfer") and suite is None:
        raise ValueError(f"the {setting} setting needs a suite")
    if setting == "few-shot" and not shots:
        raise ValueError("the few-shot setting needs at least one K (--shots)")
    names = _with_baselines(routers)
    if setting == "transfer":
        source = (
            _load_labelled_file(train_file, limit, train_filters)
            if train_file is not None
            else limit_rows(load_suite(suite, seed=seeds[0]), limit)
        )
        dataset = _load_labelled_file(test_file, limit)
        run_name = f"{source.name}->{dataset.name}"
    else:
        dataset = limit_rows(load_suite(suite, seed=seeds[0]), limit)
        source = None
        if setting == "synthetic":
            source = _load_labelled_file(train_file, limit, train_filters)
        run_name = suite
    shot_list: list[int | None] = list(shots) if setting == "few-shot" else [None]
    pool = max((k for k in shot_list if k is not None), default=0)

    def folds_for(seed: int, k: int | None) -> list[Fold]:
        if setting == "in-domain":
            return in_domain_folds(dataset, seed, validation_fraction)
        if setting == "cold-start":
            return cold_start_folds(dataset, seed, validation_fraction)
        if setting == "few-shot":
            return few_shot_folds(dataset, seed, validation_fraction, k, shot_pool=pool)
        return transfer_folds(source, dataset)

    context = {"suite": run_name, "setting": setting}
    records: list[dict] = []
    runs = [(seed, k) for seed in seeds for k in shot_list]
    first = folds_for(*runs[0])
    total = len(first) * len(runs)  # every (seed, K) has the same held-out tasks
    with _Bars(progress, names) as bars:
        for i, (seed, k) in enumerate(runs):
            for fold in first if i == 0 else folds_for(seed, k):
                label = fold.task if setting != "few-shot" else f"{fold.task} · K={_k(k)}"
                bars.start_fold(seed, label, total)
                records.extend(
                    evaluate_fold(
                        fold, names, scenarios, seed, router_params, context, bars.start_router
                    )
                )
                bars.end_fold()
    if setting in PER_TASK_SETTINGS:
        records.extend(mean_over_tasks(records))
    return records


def _k(shots: int | None) -> str:
    return "all" if shots is None else str(shots)
