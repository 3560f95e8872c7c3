"""The guard every router can wear, and ``auto``: learned routing only where evidence says so.

A learned router that beats best-single on average can still lose badly on a kind of query
it has not seen. The guard wraps one or more member routers and switches from the safe
fallback (best-single for the weights) to a candidate only where out-of-fold evidence shows
that the candidate wins:

1. **Evidence.** Each member and the best-single reference are refitted without an
   evidence fold and predict it, so every evidence row has honest out-of-fold predictions.
   Which rows are evidence depends on the deployment the guard is fitted for (``shots``,
   ``target_task``; see :mod:`trouter.routers.guard_evidence`): random folds in-domain;
   whole training tasks held out for a new task (K=0); the new task's own K labelled rows
   when it has some.
2. **Candidates**: every member; with several, their mean and (in-domain) a stack (per
   model a ridge regression of the truth on the members' out-of-fold predictions, itself
   cross-fitted); with K shots of the new task, also ``task-best``: the model with the best
   mean utility on those K rows (shrunk towards the pool means), for every query.
3. **Decision**, per weights: a candidate replaces best-single only if the lower bound of
   its mean utility gain is above ``margin`` (bootstrap over rows; Student-t over tasks for
   a new task, which needs ``min_tasks`` evidence tasks); the qualifying candidate with the
   highest mean gain wins. In-domain, the same test is then repeated per cell (k-means
   clusters of the training embeddings) with that global choice as the default; a cell
   with fewer than ``min_rows`` evidence rows keeps it. For a new task every query gets the
   global decision: its traffic is one task, and the evidence is about that task.
4. **Routing.** The members and best-single are fitted on all rows; a query's cell says
   which candidate chooses its model.

``guarded`` wears one router (``members="knn"``); ``auto`` wears a set of fast routers and so
also picks among them by validation evidence only. Both encode with ``static`` by default, and
their members use the guard's encoder unless ``member_params`` is given, so a query is encoded
once (routing one query takes well under a millisecond; scripts/bench_route.py).

The choice a guard makes is an *override* of the prediction (:class:`Forced`, with the
reason "guard: <candidate> in this cell"); the predictions shown beside it are the last
candidate's (the stack or the mean with several members), unaltered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Forced, Prediction, Queries, Router, make_router, register
from trouter.routers.cluster import fit_centroids, nearest
from trouter.routers.guard_evidence import (
    decide,
    evidence_folds,
    guard_mode,
    shrunk_means,
    stack_apply,
    stack_weights,
    target_folds,
    utility_choice,
)
from trouter.routers.tuning import embed, merge

#: Members of ``auto``: routers that fit in seconds, so refitting them per evidence fold is
#: affordable on a laptop CPU.
AUTO_MEMBERS = "knn,ridge,cluster,metric-router"

__all__ = ["AUTO_MEMBERS", "AutoRouter", "GuardedRouter", "evidence_folds"]


def _names(spec: str | Sequence[str]) -> list[str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return [name.strip() for name in items if name and name.strip()]


@register("guarded")
class GuardedRouter(Router):
    """Members used only where out-of-fold evidence beats best-single (see module)."""

    deployment_aware = True
    default_members = "knn"
    #: With one fast encoder for cells and members, routing a query takes well under 1 ms
    #: (scripts/bench_route.py); MiniLM alone takes about 10 ms a query.
    default_encoder = "static"

    def __init__(
        self,
        seed: int = 0,
        members: str | Sequence[str] | None = None,
        member_params: dict[str, dict[str, Any]] | None = None,
        cells: int = 8,
        folds: int = 4,
        shot_folds: int = 5,
        shots: int | None = None,
        target_task: str | None = None,
        confidence: float = 0.9,
        margin: float = 0.0,
        min_rows: int = 30,
        min_tasks: int = 3,
        prior_rows: float = 5.0,
        n_boot: int = 300,
    ) -> None:
        names = _names(members if members is not None else self.default_members)
        super().__init__(
            seed=seed,
            members=",".join(names),
            # None: every member encodes with the guard's own encoder, so a query is encoded
            # once (routers saved before this record {}: each member's default encoder)
            member_params=None if member_params is None else dict(member_params),
            cells=int(cells),
            folds=int(folds),
            shot_folds=int(shot_folds),
            shots=None if shots is None else int(shots),
            target_task=None if target_task is None else str(target_task),
            confidence=float(confidence),
            margin=float(margin),
            min_rows=int(min_rows),
            min_tasks=int(min_tasks),
            prior_rows=float(prior_rows),
            n_boot=int(n_boot),
        )
        if not names:
            raise ValueError(f"{self.name} needs at least one member router")
        if self.name in names or "auto" in names or "guarded" in names:
            raise ValueError("a guard cannot wear another guard")
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        if cells < 1 or min(folds, shot_folds) < 2 or min_tasks < 2 or prior_rows < 0:
            raise ValueError(
                "the guard needs cells >= 1, folds and shot_folds >= 2, min_tasks >= 2 and "
                "prior_rows >= 0"
            )
        self.member_names = names
        self._cache: dict[tuple[float, float], np.ndarray] = {}

    def _member(self, name: str) -> Router:
        given = self.params["member_params"]
        own = dict(given.get(name, {})) if given is not None else {"encoder": self.encoder}
        router = make_router(name, seed=self.seed, **own)
        if router.needs_labels:
            raise ValueError(f"router {name!r} reads test labels and cannot be a guard member")
        return router

    # ----- fitting ---------------------------------------------------------------------
    def fit(self, train: RoutingDataset, validation: RoutingDataset | None = None) -> Router:
        pool = merge(train, validation) if validation is not None and len(validation) else train
        p = self.params
        self.mode_ = guard_mode(pool, p["shots"], p["target_task"])
        target = pool.tasks == p["target_task"]
        if self.mode_ == "shots":
            fold = target_folds(pool, p["target_task"], p["shot_folds"], self.seed)
        else:
            fold = evidence_folds(pool, p["folds"], 0 if self.mode_ == "new-task" else None,
                                  self.seed)  # fmt: skip
        n_members, m = len(self.member_names), len(pool.models)
        perf = np.full((n_members + 2, len(pool), m), np.nan)  # then best-single, task-best
        cost = np.full_like(perf, np.nan)
        for g in np.unique(fold[fold >= 0]):
            fit_rows, rows = pool.subset(fold != g), np.flatnonzero(fold == g)
            queries = [pool.texts[i] for i in rows]
            routers = [self._member(n) for n in self.member_names] + [make_router("best-single")]
            for slot, router in enumerate(routers):
                pred = router.fit(fit_rows).predict(queries).reorder(pool.model_names)
                perf[slot, rows], cost[slot, rows] = pred.performance, pred.cost
            if self.mode_ == "shots":
                own = target & (fold != g)
                perf[-1, rows], cost[-1, rows] = self._task_means(pool, own, perf[-2, rows[0]],
                                                                  cost[-2, rows[0]])  # fmt: skip
        rows = np.flatnonzero((fold >= 0) & pool.complete_rows)
        slots = n_members + (2 if self.mode_ == "shots" else 1)
        self.evidence_perf_ = perf[:slots, rows]
        self.evidence_cost_ = cost[:slots, rows]
        self.true_perf_ = pool.performance[rows]
        self.true_cost_ = pool.normalised_cost[rows]
        self.evidence_tasks_ = np.asarray([str(t) for t in pool.tasks[rows]])
        x = embed(pool, self.encoder)
        cells = p["cells"] if self.mode_ == "in-domain" else 1
        self.centroids_ = fit_centroids(x, min(cells, max(1, len(pool) // 50)), self.seed)
        self.evidence_cells_ = nearest(x[rows], self.centroids_)
        if n_members > 1 and self.mode_ == "in-domain":
            self._fit_stack(fold[rows])

        self._members = [self._member(n).fit(train, validation) for n in self.member_names]
        self._best_single = make_router("best-single").fit(train, validation)
        if self.mode_ == "shots":
            self.task_perf_, self.task_cost_ = self._task_means(
                pool, target, self._best_single.mean_performance_, self._best_single.mean_cost_
            )
        self.models_ = train.model_names
        self._cache = {}
        return self

    def _task_means(self, pool: RoutingDataset, rows: np.ndarray, prior_perf, prior_cost):
        """``task-best``'s view: the target task's per-model means, shrunk to the prior."""
        return shrunk_means(pool.performance[rows], pool.normalised_cost[rows], prior_perf,
                            prior_cost, self.params["prior_rows"])  # fmt: skip

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
        """Candidates in decision order: members, then (with several) their mean and, when
        fitted in-domain, the stack; with shots of the new task, ``task-best``."""
        names = list(self.member_names)
        if len(names) > 1:
            names.append("mean")
            if getattr(self, "mode_", "in-domain") == "in-domain":
                names.append("stack")
        if getattr(self, "mode_", None) == "shots":
            names.append("task-best")
        return names

    def _candidate_predictions(
        self,
        perf: np.ndarray,
        cost: np.ndarray,
        stacked: np.ndarray | None = None,
        task_best: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(perf, cost) per candidate (order of :attr:`candidate_names`) from member arrays
        (members, rows, models). The stack uses the final weights unless ``stacked`` (perf,
        cost) is given; ``task-best`` the final target means unless ``task_best`` is."""
        n = len(self.member_names)
        out = [(perf[i], cost[i]) for i in range(n)]
        if n > 1:
            out.append((perf[:n].mean(0), cost[:n].mean(0)))
            if self.mode_ == "in-domain":
                if stacked is None:
                    stacked = np.stack(
                        [
                            stack_apply(w, x[:n])
                            for w, x in zip(self.stack_weights_, (perf, cost), strict=True)
                        ]
                    )
                out.append((stacked[0], stacked[1]))
        if self.mode_ == "shots":
            if task_best is None:
                shape = perf.shape[1:]
                task_best = (np.broadcast_to(self.task_perf_, shape),
                             np.broadcast_to(self.task_cost_, shape))  # fmt: skip
            out.append(task_best)
        return out

    def decisions(self, weights: Weights) -> np.ndarray:
        """Candidate index per cell for ``weights`` (-1 = best-single); the last entry is the
        decision on all evidence rows, used for cells with too little evidence."""
        key = (float(weights.performance), float(weights.cost))
        if key in self._cache:
            return self._cache[key]
        n = len(self.member_names)
        utility = weights.utility(self.true_perf_, self.true_cost_)
        rows = np.arange(len(utility))
        reference = utility_choice(self.evidence_perf_[n], self.evidence_cost_[n], weights)
        base = utility[rows, reference]
        task_best = None
        if self.mode_ == "shots":
            task_best = (self.evidence_perf_[n + 1], self.evidence_cost_[n + 1])
        candidates = self._candidate_predictions(
            self.evidence_perf_[:n], self.evidence_cost_[:n],
            getattr(self, "stack_evidence_", None), task_best,
        )  # fmt: skip
        diff = np.stack(
            [utility[rows, utility_choice(p, c, weights)] - base for p, c in candidates], axis=1
        )
        # column 0 is best-single itself (a zero gain), so that a cell can also fall back
        diff = np.concatenate([np.zeros((len(diff), 1)), diff], axis=1)
        n_cells = len(self.centroids_)
        out = np.full(n_cells + 1, -1)
        out[n_cells] = self._decide(diff, self.evidence_tasks_, default=-1)
        for cell in range(n_cells):
            mine = self.evidence_cells_ == cell
            if self.mode_ != "in-domain" or mine.sum() < self.params["min_rows"]:
                out[cell] = out[n_cells]
            else:
                out[cell] = self._decide(diff[mine], self.evidence_tasks_[mine], out[n_cells])
        self._cache[key] = out
        return out

    def _decide(self, diff: np.ndarray, tasks: np.ndarray, default: int) -> int:
        p = self.params
        return decide(diff, tasks, default, self.mode_, confidence=p["confidence"],
                      margin=p["margin"], min_rows=p["min_rows"], min_tasks=p["min_tasks"],
                      n_boot=p["n_boot"], seed=self.seed)  # fmt: skip

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
            if texts and len(self.centroids_) > 1
            else np.zeros(len(texts), dtype=int)
        )

        names = self.candidate_names

        def override(weights: Weights) -> Forced:
            decision = self.decisions(weights)[cells]
            chosen = np.full(
                len(texts),
                int(utility_choice(fallback.performance[:1], fallback.cost[:1], weights)[0]),
            )
            for c in np.unique(decision[decision >= 0]):
                rows = decision == c
                chosen[rows] = utility_choice(
                    candidates[c][0][rows], candidates[c][1][rows], weights
                )
            reason = {c: f"guard: {names[c] if c >= 0 else 'best-single'} in this cell"
                      for c in np.unique(decision).tolist()}  # fmt: skip
            return Forced(chosen, [reason[c] for c in decision.tolist()])

        # shown: the last candidate's predictions (the stack or the mean with several members)
        shown_perf, shown_cost = candidates[-1]
        return Prediction(list(models), np.asarray(shown_perf), np.asarray(shown_cost), override,
                          list(models))  # fmt: skip

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
