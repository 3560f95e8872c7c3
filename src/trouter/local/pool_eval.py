"""The local-pool cold-start evaluation: routers trained on synthetic rows, tested on real ones.

One dataset holds both files of the release (``synthetic.jsonl`` and ``real.jsonl``), so
cost is min-max normalised per benchmark (synthetic, gsm8k, humaneval) over all their rows,
as the method defines. The real rows are split once, with a constant seed, into a train
half and a test half per benchmark; every figure is scored on the same real test half.

Folds per run seed (the test split never informs any choice):

- ``synthetic`` / ``synthetic-filtered``: fit on the synthetic rows (all of them, or only
  those passing both generator-quality filters), validation carved from them;
- ``few-shot``: the synthetic rows plus K real train-half rows drawn with the seed (nested
  prefixes: the 10 are the first 10 of the 25), validation carved from those K only;
- ``in-domain``: the real train half alone (the reference a labelled user would have).

Beside oracle (the best model per query in hindsight) every fold reports
``dataset-oracle`` scored per *benchmark*: the best model for each real benchmark in
hindsight, the ceiling of any router that knows a question's task but nothing about the
question itself (which is all a task-level router can hope to learn from synthetic rows).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trouter.config import TrouterError
from trouter.data.dataset import RoutingDataset, task_order
from trouter.data.label_filters import FILTERS, passes
from trouter.evaluation.folds import Fold, make_fold

BASELINES = ("oracle", "best-single", "random", "cheapest")
#: Scored on the test rows grouped by benchmark: the best model per benchmark in hindsight.
TASK_CEILING = "dataset-oracle"
SYNTHETIC_ROUTERS = ("knn", "mlp", "cluster", "metric-router", "trouter", "trouter+", "auto")
IN_DOMAIN_ROUTERS = ("knn", "auto")
SHOTS = (0, 10, 25, 50, 100)
#: The real rows' train/test halves use one constant seed, so every run seed and every K
#: is scored on the same test questions.
SPLIT_SEED = 0
VALIDATION_FRACTION = 0.15
#: Fewer complete rows than this in either file and there is nothing to evaluate yet.
MIN_ROWS = 20
#: The task of every real row: the real questions are one application, the traffic the
#: routers are evaluated on (so the guard sees few-shot rows as shots of that task).
REAL_TASK = "real"


class IncompleteReleaseError(TrouterError):
    """The release does not hold enough complete rows to evaluate yet."""


def load_release(directory: str | Path) -> tuple[RoutingDataset, np.ndarray, np.ndarray]:
    """Both files as one dataset; a mask of its synthetic rows; a mask of those passing
    both filters. Real rows are split ``train`` / ``test`` (half per benchmark), synthetic
    rows are all ``train``."""
    from trouter.data.labelled import load_labelled

    directory = Path(directory)
    synthetic = _read_part(directory / "synthetic.jsonl")
    real = _read_part(directory / "real.jsonl")
    if len(synthetic) < MIN_ROWS or len(real) < MIN_ROWS:
        raise IncompleteReleaseError(
            f"{directory}: the release holds {len(synthetic)} complete synthetic and "
            f"{len(real)} complete real rows; the evaluation needs at least {MIN_ROWS} of "
            "each. Continue `trouter experiment local-pool synthetic` / `real`, then run "
            "`trouter experiment local-pool export`"
        )
    with tempfile.TemporaryDirectory(prefix="trouter-local-pool-") as tmp:
        merged = Path(tmp) / "local-pool.jsonl"
        merged.write_text("".join(json.dumps(row) + "\n" for row in [*synthetic, *real]))
        dataset = load_labelled(merged)
    n_syn = len(synthetic)
    splits = np.full(len(dataset), "train", dtype=object)
    is_synthetic = np.arange(len(dataset)) < n_syn
    rng = np.random.default_rng(SPLIT_SEED)
    benchmarks = dataset.benchmarks
    for benchmark in dict.fromkeys(benchmarks[n_syn:]):
        rows = n_syn + np.flatnonzero(benchmarks[n_syn:] == benchmark)
        order = rng.permutation(rows)
        splits[order[: len(rows) // 2]] = "train"
        splits[order[len(rows) // 2 :]] = "test"
    filtered = np.zeros(len(dataset), dtype=bool)
    filtered[:n_syn] = [passes(r, FILTERS) for r in synthetic]
    tasks = np.where(is_synthetic, dataset.tasks, REAL_TASK).astype(object)
    return replace(dataset, name="local-pool", splits=splits, tasks=tasks), is_synthetic, filtered


def _read_part(path: Path) -> list[dict[str, Any]]:
    """The rows of one labelled file of the release (none when it is not written yet)."""
    from trouter.data.labelled import read_labelled

    return read_labelled(path) if path.exists() and path.stat().st_size else []


def _train_rows(dataset: RoutingDataset, rows: np.ndarray, seed: int) -> RoutingDataset:
    """``rows`` as training rows with a validation split carved from them (stratified)."""
    part = dataset.subset(rows)
    part = replace(part, splits=np.full(len(part), "train", dtype=object))
    return part.with_validation(VALIDATION_FRACTION, seed)


def _concat_train(parts: Sequence[RoutingDataset], dataset: RoutingDataset, rows) -> RoutingDataset:
    """One training dataset from parts that were each carved (keeps their splits)."""
    merged = dataset.subset(np.concatenate(rows))
    return replace(merged, splits=np.concatenate([p.splits for p in parts]))


def local_pool_folds(
    dataset: RoutingDataset,
    is_synthetic: np.ndarray,
    filtered: np.ndarray,
    seed: int,
    shots: Sequence[int] = SHOTS,
) -> list[tuple[str, Fold]]:
    """(setting, fold) pairs for one seed; see the module docstring."""
    test = dataset.split("test")
    synthetic = np.flatnonzero(is_synthetic)
    real_train = task_order(
        np.flatnonzero(~is_synthetic & (dataset.splits == "train")), "local-pool", seed
    )
    folds = [("synthetic", make_fold(REAL_TASK, _train_rows(dataset, synthetic, seed), test, 0))]
    kept = np.flatnonzero(is_synthetic & filtered)
    if len(kept) >= 10:
        folds.append(
            ("synthetic-filtered", make_fold(REAL_TASK, _train_rows(dataset, kept, seed), test, 0))
        )
    base = _train_rows(dataset, synthetic, seed)
    for k in shots:
        if k == 0 or k > len(real_train):
            continue
        shots_rows = real_train[:k]
        own = _train_rows(dataset, shots_rows, seed)
        train = _concat_train([base, own], dataset, [synthetic, shots_rows])
        folds.append(("few-shot", make_fold(REAL_TASK, train, test, k)))
    folds.append(("in-domain", make_fold(REAL_TASK, _train_rows(dataset, real_train, seed), test)))
    return folds


def evaluate_release(
    directory: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    shots: Sequence[int] = SHOTS,
    on_fold: Callable[[str], None] | None = None,
    routers: Sequence[str] = SYNTHETIC_ROUTERS,
) -> list[dict[str, Any]]:
    """Records (one per router x scenario x fold x seed) for the whole evaluation.

    ``routers`` are trained on synthetic (+ few-shot) rows; in-domain runs the routers of
    :data:`IN_DOMAIN_ROUTERS` that are among them."""
    from trouter.evaluation.harness import evaluate_fold
    from trouter.evaluation.scenarios import SCENARIOS

    dataset, is_synthetic, filtered = load_release(directory)
    records: list[dict[str, Any]] = []
    for seed in seeds:
        for setting, fold in local_pool_folds(dataset, is_synthetic, filtered, seed, shots):
            if on_fold:
                on_fold(f"seed {seed} {setting} K={fold.shots}")
            learned = list(routers)
            if setting == "in-domain":
                learned = [r for r in learned if r in IN_DOMAIN_ROUTERS] or learned[:1]
            context = {"suite": "local-pool", "setting": setting}
            fold_records = evaluate_fold(
                fold, [*BASELINES, *learned], SCENARIOS, seed, None, context
            )
            # the fold's task (REAL_TASK) names the routed application for the guard; its test
            # rows are the whole real test half, so each record stands for the run ("all")
            ceiling = evaluate_fold(
                _tasks_are_benchmarks(fold), [*BASELINES, TASK_CEILING], SCENARIOS, seed,
                None, context,
            )  # fmt: skip
            fold_records += [r for r in ceiling if r["router"] == TASK_CEILING]
            records += [{**record, "task": "all"} for record in fold_records]
    return records


def _tasks_are_benchmarks(fold: Fold) -> Fold:
    """The fold with its test rows' task set to their benchmark (for the task ceiling)."""
    test = replace(fold.test, tasks=fold.test.benchmarks.astype(object))
    return replace(fold, test=test)
