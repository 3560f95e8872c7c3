"""The guard's evidence and decision rules, kept apart from the router so each reads alone.

The guard (:mod:`trouter.routers.guard`) compares candidates (learned routers, their mean, a
stack, the new task's own best model) with best-single on *out-of-fold* predictions, and
switches away from best-single only where a lower confidence bound of the gain is above a
margin. Which rows are evidence, and what the unit of uncertainty is, depends on the
deployment the guard is fitted for (its *mode*):

``in-domain`` (``shots=None``)
    Test queries come from the training distribution: random folds over all rows, the
    bound is a paired bootstrap over rows.
``new-task`` (``shots=0``, or no labelled row of the target task)
    A task the router has never seen: folds hold whole training tasks out, and the unit of
    evidence is the *task* -- a row bootstrap would treat 1,000 rows of two tasks as 1,000
    independent witnesses, when they say little about a third task. The bound is Student's t
    over per-task mean gains, and at least ``min_tasks`` tasks are required.
``shots`` (``shots=K`` and K >= 2 labelled rows of the target task)
    The K rows are samples of the very traffic that will be routed, so they are the
    evidence: folds over them only (every other row stays in each fit), bootstrap over them.
"""

from __future__ import annotations

import numpy as np

from trouter.data.dataset import RoutingDataset, task_order
from trouter.evaluation.scenarios import Weights

MODES = ("in-domain", "new-task", "shots")


def guard_mode(data: RoutingDataset, shots: int | None, target_task: str | None) -> str:
    """The deployment the evidence must simulate (see the module docstring)."""
    if shots is None:
        return "in-domain"
    if target_task is not None and int((data.tasks == target_task).sum()) >= 2:
        return "shots"
    return "new-task"


def evidence_folds(data: RoutingDataset, n_folds: int, shots: int | None, seed: int) -> np.ndarray:
    """Evidence fold id per row; -1 for rows never held out.

    ``shots=None``: random folds. ``shots=K``: leave-task-out folds inside the training
    tasks, where each held-out task keeps K seeded rows in the fit (the situation of a new
    task with K shots); tasks too small to hold out are spread over the folds at random.
    """
    rng = np.random.default_rng(seed)
    n = len(data)
    fold = np.full(n, -1)
    if shots is not None:
        counts = {task: int((data.tasks == task).sum()) for task in np.unique(data.tasks)}
        large = sorted((t for t, c in counts.items() if c > 2 * shots + 10), key=counts.get)
        if len(large) >= 2:
            groups = min(n_folds, len(large))
            load = np.zeros(groups)
            for task in reversed(large):  # largest first, onto the lightest fold
                g = int(load.argmin())
                rows = task_order(np.flatnonzero(data.tasks == task), task, seed)
                fold[rows[shots:]] = g
                load[g] += len(rows)
            small = np.flatnonzero(~np.isin(data.tasks, large))
            fold[small] = rng.integers(0, groups, len(small))
            return fold
    groups = max(2, min(n_folds, n // 10))
    fold[rng.permutation(n)] = np.arange(n) % groups
    return fold


def target_folds(data: RoutingDataset, target_task: str, n_folds: int, seed: int) -> np.ndarray:
    """Folds over the target task's rows only (-1 elsewhere: always in the fit)."""
    rows = task_order(np.flatnonzero(data.tasks == target_task), target_task, seed)
    fold = np.full(len(data), -1)
    fold[rows] = np.arange(len(rows)) % max(2, min(n_folds, len(rows)))
    return fold


def shrunk_means(
    perf: np.ndarray, cost: np.ndarray, prior_perf: np.ndarray, prior_cost: np.ndarray,
    prior_rows: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per-model mean performance and cost of a few rows, shrunk towards a prior as if the
    prior were ``prior_rows`` extra rows (masked cells count as absent)."""

    def one(values: np.ndarray, prior: np.ndarray) -> np.ndarray:
        seen = ~np.isnan(values)
        total = np.where(seen, values, 0.0).sum(axis=0) + prior_rows * prior
        return total / (seen.sum(axis=0) + prior_rows)

    return one(perf, prior_perf), one(cost, prior_cost)


def bootstrap_lower(diff: np.ndarray, confidence: float, n_boot: int, seed: int) -> np.ndarray:
    """Per column of ``diff`` (rows, candidates): the lower ``confidence`` bound of the mean
    by a paired bootstrap over rows (one resampling shared by all candidates)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)  # (n_boot, candidates)
    return np.quantile(means, 1.0 - confidence, axis=0)


def task_lower(per_task: np.ndarray, confidence: float) -> np.ndarray:
    """Per column of ``per_task`` (tasks, candidates): the one-sided Student-t lower bound of
    the mean over tasks."""
    from scipy.stats import t

    n = len(per_task)
    spread = per_task.std(axis=0, ddof=1) / np.sqrt(n)
    return per_task.mean(axis=0) - t.ppf(confidence, n - 1) * spread


def stack_weights(inputs: np.ndarray, truth: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """Per model j: ridge weights (members + intercept) of ``truth[:, j]`` on the members'
    predictions ``inputs[:, :, j]``; shape (models, members + 1)."""
    n_members, n, m = inputs.shape
    out = np.zeros((m, n_members + 1))
    for j in range(m):
        a = np.concatenate([inputs[:, :, j].T, np.ones((n, 1))], axis=1)
        out[j] = np.linalg.solve(a.T @ a + ridge * np.eye(n_members + 1), a.T @ truth[:, j])
    return out


def stack_apply(weights: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Stacked predictions (rows, models) in [0, 1] from member predictions (members, rows,
    models) and :func:`stack_weights`."""
    combined = np.einsum("knj,jk->nj", inputs, weights[:, :-1]) + weights[:, -1]
    return np.clip(combined, 0.0, 1.0)


def utility_choice(perf: np.ndarray, cost: np.ndarray, weights: Weights) -> np.ndarray:
    """The chosen model per row (ties go to the cheaper model)."""
    return np.argmax(weights.utility(perf, cost) - 1e-9 * cost, axis=1)


def decide(
    gain: np.ndarray,
    tasks: np.ndarray,
    default: int,
    mode: str,
    *,
    confidence: float,
    margin: float,
    min_rows: int,
    min_tasks: int,
    n_boot: int,
    seed: int,
) -> int:
    """The choice for one set of evidence rows: ``default`` unless an alternative beats it
    with confidence (Student-t over tasks for a new task, bootstrap over rows otherwise).

    ``gain`` (rows, 1 + candidates) is each choice's utility gain over best-single (column
    0 is best-single itself, index -1); the answer is a candidate index, -1 = best-single.
    """
    relative = gain - gain[:, [default + 1]]
    if mode == "new-task":
        enough = [t for t in np.unique(tasks) if (tasks == t).sum() >= min_rows]
        if len(enough) < min_tasks:
            return default
        per_task = np.stack([relative[tasks == t].mean(axis=0) for t in enough])
        mean, lower = per_task.mean(axis=0), task_lower(per_task, confidence)
    else:
        mean = relative.mean(axis=0)
        lower = bootstrap_lower(relative, confidence, n_boot, seed)
    ok = lower > margin
    ok[default + 1] = False
    if not ok.any():
        return default
    return int(np.flatnonzero(ok)[np.argmax(mean[ok])]) - 1
