"""The guard every router can wear, and ``auto``: learned routing only where evidence says so.

A learned router that beats best-single on average can still lose badly on a kind of query
it has not seen. The guard wraps one or more member routers and, per *cell* of the query
space (k-means clusters of the training embeddings), switches from the safe fallback to a
member only where out-of-fold evidence shows that the member wins there:

1. **Evidence.** The labelled rows (train + validation) are split into folds; each member
   and the best-single reference are refitted without a fold and predict it, so every
   evidence row has honest out-of-fold predictions. How the folds are made simulates the
   deployment (``shots``):

   * ``shots=None`` (the test queries come from the training distribution, as in-domain):
     random folds;
   * ``shots=K`` (a new task with K labelled rows, K=0 for cold start): leave-task-out
     folds inside the training tasks, where each held-out task keeps K seeded rows in the
     fit, exactly the situation of the real held-out task. Tasks with too few rows to hold
     out (the target task's own K shots) are spread over the folds at random.
2. **Decision**, per weights: each candidate (every member, the mean of the members'
   predictions, and a stack: per model a ridge regression of the truth on the members'
   out-of-fold predictions, itself cross-fitted) is scored by its paired per-row utility
   gain on the evidence rows. On all rows, the default is best-single and a candidate
   replaces it only if the bootstrap lower bound (``1 - confidence`` quantile) of its mean
   gain over best-single is above ``margin`` and, for a new task, its mean gain is not
   negative on any held-out task with ``min_rows`` rows (at least two such tasks are needed:
   one task says nothing about another); the qualifying candidate with the
   highest mean gain wins. Then per cell (k-means clusters of the training embeddings), that
   global choice is the default, and the same test decides whether another candidate, or
   best-single, replaces it in the cell; a cell with fewer than ``min_rows`` evidence rows
   keeps the global choice. So learned routing is used where the evidence says it wins, and
   the global best-single model for the weights everywhere else.
3. **Routing.** The final members and best-single are fitted on all rows; a query's cell
   says which of them chooses its model.

``guarded`` wears one router (``members="knn"``); ``auto`` wears a set of fast routers and so
also picks among them, per cell, by validation utility only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset, task_order
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, Queries, Router, make_router, register
from trouter.routers.cluster import fit_centroids, nearest
from trouter.routers.tuning import embed, merge

#: Members of ``auto``: routers that fit in seconds, so refitting them per evidence fold is
#: affordable on a laptop CPU.
AUTO_MEMBERS = "knn,ridge,cluster,metric-router"


def _names(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [name.strip() for name in items if name and name.strip()]


def evidence_folds(data: RoutingDataset, n_folds: int, shots: int | None, seed: int) -> np.ndarray:
    """Evidence fold id per row; -1 for rows never held out (the shots a held-out task
    keeps in its fit). See the module docstring for how ``shots`` shapes the folds."""
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


def bootstrap_lower(diff: np.ndarray, confidence: float, n_boot: int, seed: int) -> np.ndarray:
    """Per column of ``diff`` (rows, candidates): the lower ``confidence`` bound of the mean
    by a paired bootstrap over rows (one resampling shared by all candidates)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)  # (n_boot, candidates)
    return np.quantile(means, 1.0 - confidence, axis=0)


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


def _utility_choice(perf: np.ndarray, cost: np.ndarray, weights: Weights) -> np.ndarray:
    return np.argmax(weights.utility(perf, cost) - 1e-9 * cost, axis=1)


@register("guarded")
class GuardedRouter(Router):
    """Members used per cell only where out-of-fold evidence beats best-single (see module)."""

    deployment_aware = True
    default_members = "knn"

    def __init__(
        self,
        seed: int = 0,
        members: str | Sequence[str] | None = None,
        member_params: dict[str, dict[str, Any]] | None = None,
        cells: int = 8,
        folds: int = 4,
        shots: int | None = None,
        confidence: float = 0.9,
        margin: float = 0.0,
        min_rows: int = 30,
        n_boot: int = 300,
    ) -> None:
        names = _names(members if members is not None else self.default_members)
        super().__init__(
            seed=seed,
            members=",".join(names),
            member_params=dict(member_params or {}),
            cells=int(cells),
            folds=int(folds),
            shots=None if shots is None else int(shots),
            confidence=float(confidence),
            margin=float(margin),
            min_rows=int(min_rows),
            n_boot=int(n_boot),
        )
        if not names:
            raise ValueError(f"{self.name} needs at least one member router")
        if self.name in names or "auto" in names or "guarded" in names:
            raise ValueError("a guard cannot wear another guard")
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        if cells < 1 or folds < 2:
            raise ValueError("the guard needs cells >= 1 and folds >= 2")
        self.member_names = names
        self._cache: dict[tuple[float, float], np.ndarray] = {}

    def _member(self, name: str) -> Router:
        router = make_router(name, seed=self.seed, **self.params["member_params"].get(name, {}))
        if router.needs_labels:
            raise ValueError(f"router {name!r} reads test labels and cannot be a guard member")
        return router

    # ----- fitting ---------------------------------------------------------------------
    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        pool = merge(train, validation) if validation is not None and len(validation) else train
        fold = evidence_folds(pool, self.params["folds"], self.params["shots"], self.seed)
        held = fold >= 0
        n_members, m = len(self.member_names), len(pool.models)
        perf = np.full((n_members + 1, len(pool), m), np.nan)  # last slot: best-single
        cost = np.full_like(perf, np.nan)
        for g in np.unique(fold[held]):
            fit_rows, rows = pool.subset(fold != g), np.flatnonzero(fold == g)
            queries = [pool.texts[i] for i in rows]
            routers = [self._member(n) for n in self.member_names] + [make_router("best-single")]
            for slot, router in enumerate(routers):
                pred = router.fit(fit_rows).predict(queries).reorder(pool.model_names)
                perf[slot, rows], cost[slot, rows] = pred.performance, pred.cost
        rows = np.flatnonzero(held & pool.complete_rows)
        self.evidence_perf_ = perf[:, rows]
        self.evidence_cost_ = cost[:, rows]
        self.true_perf_ = pool.performance[rows]
        self.true_cost_ = pool.normalised_cost[rows]
        self.evidence_tasks_ = np.asarray([str(t) for t in pool.tasks[rows]])
        x = embed(pool, self.encoder)
        self.centroids_ = fit_centroids(
            x, min(self.params["cells"], max(1, len(pool) // 50)), self.seed
        )
        self.evidence_cells_ = nearest(x[rows], self.centroids_)
        self._evidence_x = x[rows]  # for diagnostics; not part of the saved state
        if n_members > 1:
            self._fit_stack(fold[rows])

        self._members = [self._member(n).fit(train, validation) for n in self.member_names]
        self._best_single = make_router("best-single").fit(train, validation)
        self.models_ = train.model_names
        self._cache = {}
        return self

    def _fit_stack(self, evidence_fold: np.ndarray) -> None:
        """Stacking: per model and metric, a ridge regression of the truth on the members'
        out-of-fold predictions. Its own evidence is cross-fitted (weights learned on the
        other folds), so it competes with the members on equal terms."""
        members = slice(0, len(self.member_names))
        truths = (self.true_perf_, self.true_cost_)
        inputs = (self.evidence_perf_[members], self.evidence_cost_[members])
        self.stack_evidence_ = np.stack([np.full(t.shape, np.nan) for t in truths])
        for g in np.unique(evidence_fold):
            mine = evidence_fold == g
            for i, (x, t) in enumerate(zip(inputs, truths, strict=True)):
                weights = stack_weights(x[:, ~mine], t[~mine])
                self.stack_evidence_[i][mine] = stack_apply(weights, x[:, mine])
        self.stack_weights_ = np.stack(
            [stack_weights(x, t) for x, t in zip(inputs, truths, strict=True)]
        )

    # ----- decisions ---------------------------------------------------------------------
    @property
    def candidate_names(self) -> list[str]:
        """Candidates in decision order: members, then (with several) their mean and stack."""
        return self.member_names + (["mean", "stack"] if len(self.member_names) > 1 else [])

    def _candidate_predictions(
        self, perf: np.ndarray, cost: np.ndarray, stacked: np.ndarray | None = None
    ):
        """(perf, cost) per candidate from member arrays (members, rows, models); the stack
        is applied with the final weights unless ``stacked`` (perf, cost) is given."""
        n = len(self.member_names)
        out = [(perf[i], cost[i]) for i in range(n)]
        if n > 1:
            out.append((perf[:n].mean(0), cost[:n].mean(0)))
            if stacked is None:
                stacked = np.stack(
                    [
                        stack_apply(w, x[:n])
                        for w, x in zip(self.stack_weights_, (perf, cost), strict=True)
                    ]
                )
            out.append((stacked[0], stacked[1]))
        return out

    def decisions(self, weights: Weights) -> np.ndarray:
        """Candidate index per cell for ``weights`` (-1 = best-single); the last entry is the
        decision on all evidence rows, used for cells with too little evidence."""
        key = (float(weights.performance), float(weights.cost))
        if key in self._cache:
            return self._cache[key]
        utility = weights.utility(self.true_perf_, self.true_cost_)
        rows = np.arange(len(utility))
        reference = _utility_choice(self.evidence_perf_[-1], self.evidence_cost_[-1], weights)
        base = utility[rows, reference]
        diff = np.stack(
            [
                utility[rows, _utility_choice(p, c, weights)] - base
                for p, c in self._candidate_predictions(
                    self.evidence_perf_, self.evidence_cost_, getattr(self, "stack_evidence_", None)
                )
            ],
            axis=1,
        )
        # column 0 is best-single itself (a zero gain), so that a cell can also fall back
        diff = np.concatenate([np.zeros((len(diff), 1)), diff], axis=1)
        n_cells = len(self.centroids_)
        out = np.full(n_cells + 1, -1)
        out[n_cells] = self._decide(diff, self.evidence_tasks_, default=-1)
        for cell in range(n_cells):
            mine = self.evidence_cells_ == cell
            if mine.sum() < self.params["min_rows"]:
                out[cell] = out[n_cells]
            else:
                out[cell] = self._decide(diff[mine], self.evidence_tasks_[mine], out[n_cells])
        self._cache[key] = out
        return out

    def _decide(self, diff: np.ndarray, tasks: np.ndarray, default: int) -> int:
        """The choice for one set of evidence rows: ``default`` unless an alternative beats
        it there with confidence (and, for a new task, on no held-out task loses).

        ``diff`` (rows, 1 + candidates) is each choice's utility gain over best-single
        (column 0: best-single, index -1). The default is best-single for the decision on all
        rows, and that decision for each cell.
        """
        gain = diff - diff[:, [default + 1]]
        mean = gain.mean(axis=0)
        lower = bootstrap_lower(gain, self.params["confidence"], self.params["n_boot"], self.seed)
        ok = lower > self.params["margin"]
        if self.params["shots"] is not None:
            # A new task: the gain must hold on every held-out task with enough rows here,
            # and there must be at least two such tasks (one task says nothing about a third).
            enough = [t for t in np.unique(tasks) if (tasks == t).sum() >= self.params["min_rows"]]
            if len(enough) < 2:
                return default
            for task in enough:
                ok &= gain[tasks == task].mean(axis=0) >= 0
        if not ok.any():
            return default
        return int(np.flatnonzero(ok)[np.argmax(mean[ok])]) - 1

    # ----- routing -----------------------------------------------------------------------
    def predict(self, queries: Queries) -> Prediction:
        models = self._require_fitted()
        texts = list(queries.texts) if isinstance(queries, RoutingDataset) else list(queries)
        preds = [r.predict(texts).reorder(models) for r in self._members]
        perf = np.stack([p.performance for p in preds])
        cost = np.stack([p.cost for p in preds])
        candidates = self._candidate_predictions(perf, cost)
        fallback = self._best_single.predict(texts[:1] or [""]).reorder(models)
        cells = (
            nearest(embed(texts, self.encoder), self.centroids_)
            if texts
            else np.zeros(0, dtype=int)
        )

        def override(weights: Weights) -> np.ndarray:
            decision = self.decisions(weights)[cells]
            chosen = np.full(
                len(texts),
                int(_utility_choice(fallback.performance[:1], fallback.cost[:1], weights)[0]),
            )
            for c in np.unique(decision[decision >= 0]):
                rows = decision == c
                chosen[rows] = _utility_choice(
                    candidates[c][0][rows], candidates[c][1][rows], weights
                )
            return chosen

        shown_perf, shown_cost = candidates[-1]
        return Prediction(list(models), shown_perf, shown_cost, override, list(models))

    def explain(self, weights: Weights) -> list[str]:
        """Per cell, the name of the candidate that routes it (``best-single`` = fallback)."""
        self._require_fitted()
        names = self.candidate_names
        return [names[c] if c >= 0 else "best-single" for c in self.decisions(weights)[:-1]]

    # ----- persistence: member states nested, evidence as arrays ---------------------------
    def get_state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k.endswith("_") and k != "params"}
        state["evidence_tasks_"] = [str(t) for t in self.evidence_tasks_]  # JSON, not array
        state["member_states"] = [r.get_state() for r in self._members]
        state["best_single_state"] = self._best_single.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        members = state.pop("member_states")
        best = state.pop("best_single_state")
        self.__dict__.update(state)
        self.evidence_tasks_ = np.asarray(self.evidence_tasks_, dtype=object)
        self._members = []
        for name, member_state in zip(self.member_names, members, strict=True):
            router = self._member(name)
            router.set_state(member_state)
            self._members.append(router)
        self._best_single = make_router("best-single")
        self._best_single.set_state(best)
        self._cache = {}


@register("auto")
class AutoRouter(GuardedRouter):
    """The recommended router: the guard over fast members (see :data:`AUTO_MEMBERS`), so it
    picks, per cell of the query space, whichever member (or their mean) wins on out-of-fold
    validation evidence, and best-single where none does."""

    default_members = AUTO_MEMBERS
