"""Replay evaluation of online routers: ``trouter eval --setting online``.

A full-information log (every query scored for every pool model) is replayed as a stream in
a random order per seed. A policy sees only the score of the model it served, except on the
queries it chose for a background label within its budget; the full matrix is otherwise
used only for scoring, so the simulation is exact.

Streams: on a suite, each task in turn is the new task. Its rows (every split, scorable rows
only) are the stream, and the base router is fitted as in the cold-start setting, on the
other tasks' train and validation rows. With a labelled test file, the base is fitted on the
training source (restricted to the shared pool) and every row of the file is streamed.

Routers of one run (all on the same streams and orders):

* ``best-single`` (the cold-start one, fitted on the base's rows), ``oracle``, ``random``;
* ``skyline``: ``knn`` fitted in-domain on the streamed task's own labels, cross-fitted (each
  row is predicted by a model that never saw it); the upper reference for learning;
* ``few-shot``: the base router refitted with K stream rows picked at random up front, K the
  label budget (what in-stream labelling must beat);
* ``online`` (active labels), ``online-random`` (random labels), ``online-nobase`` (no base:
  price prior), ``online-base`` (anchored at the base's choice instead of best-single),
  ``online-explore`` (exploring 5%), ``online-challenge`` (the served A/B test at 5%), each
  with the same budget and feedback;
* the bandit peers ``linucb``, ``thompson``, ``eps-greedy`` (served feedback only).

With a change (:mod:`online_changes`: drift or a new model at query ``T``) every router is
served, fed and scored on the changed matrix; a new model is available to no one before
``T`` (the online routers are fitted without it and ``add_model`` it at ``T``). Best-single
stays the training rows' choice among the models available at the start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trouter.data.dataset import RoutingDataset
from trouter.evaluation.folds import Fold, cold_start_folds, transfer_folds
from trouter.evaluation.harness import fit_params
from trouter.evaluation.online_changes import (
    ArrivingModel,
    Change,
    World,
    arriving_models,
    check_models,
    default_model,
    without_model,
)
from trouter.evaluation.online_metrics import stream_metrics
from trouter.evaluation.online_policies import (
    EpsilonGreedy,
    FixedPolicy,
    LinUCB,
    OnlinePolicy,
    ThompsonCells,
    projection,
)
from trouter.evaluation.online_replay import Feedback, replay
from trouter.evaluation.scenarios import Weights
from trouter.routers.base import Prediction, Router, make_router
from trouter.routers.cluster import fit_centroids, nearest
from trouter.routers.guard import AUTO_MEMBERS
from trouter.routers.online import OnlineRouter
from trouter.routers.online_labels import LabelBudget, budget_for, budget_size
from trouter.routers.tuning import embed, merge

#: Online variants: extra parameters of each (``online-random`` differs in label selection).
ONLINE_VARIANTS: dict[str, dict[str, Any]] = {
    "online": {},
    "online-random": {},
    "online-nobase": {},
    "online-explore": {"explore": 0.05},
    "online-challenge": {"challenge": 0.05},
    "online-base": {"anchor": "base"},
}
ONLINE_ROUTERS = tuple(ONLINE_VARIANTS)
PEERS = ("linucb", "thompson", "eps-greedy")
FIXED = ("best-single", "oracle", "random", "skyline", "few-shot")
ALL_ROUTERS = FIXED + ONLINE_ROUTERS + PEERS
ENCODER = "static"


@dataclass
class OnlineConfig:
    base: str = "auto"
    label_budgets: tuple[str, ...] = ("0",)
    feedback: Feedback = field(default_factory=Feedback)
    routers: tuple[str, ...] = ALL_ROUTERS
    online_params: dict[str, Any] = field(default_factory=dict)
    max_stream: int | None = None
    tasks: tuple[str, ...] = ()
    skyline_folds: int = 5
    #: More online variants to compare (name -> parameters), e.g. {"online-cells8": {"cells": 8}}
    extra_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Drift or a new model at a stream query (None: the stationary stream)
    change: Change | None = None
    #: With ``new-model@T`` and no model named: the first N models (by name) arrive in turn
    change_models: int | None = None

    def variants(self) -> dict[str, dict[str, Any]]:
        return {**ONLINE_VARIANTS, **self.extra_variants}


def base_params(name: str) -> dict[str, Any]:
    """Base routers run on the fast static encoder (members of ``auto`` included)."""
    if name in ("auto", "guarded"):
        members = AUTO_MEMBERS if name == "auto" else "knn"
        return {
            "encoder": ENCODER,
            "member_params": {m: {"encoder": ENCODER} for m in members.split(",")},
        }
    return {"encoder": ENCODER}


def stream_folds(dataset: RoutingDataset, seed: int, config: OnlineConfig) -> list[Fold]:
    """Per task: the base's rows (other tasks) and the stream (every scorable row of it)."""
    folds = []
    for fold in cold_start_folds(dataset, seed, 0.15):
        if config.tasks and fold.task not in config.tasks:
            continue
        rows = dataset.subset((dataset.tasks == fold.task) & dataset.complete_rows)
        folds.append(Fold(fold.task, fold.train, fold.validation, rows, 0, 0))
    return folds


def fit_base(name: str, fold: Fold, seed: int, shots: int | None = 0) -> Router:
    fold_view = Fold(fold.task, fold.train, fold.validation, fold.test, 0, shots)
    params = fit_params(name, fold_view, {name: base_params(name)})
    return make_router(name, seed=seed, **params).fit(fold.train, fold.validation)


def _order(n: int, seed: int, limit: int | None) -> np.ndarray:
    order = np.random.default_rng([seed, 3]).permutation(n)
    return order if limit is None else order[:limit]


# ----- fixed choices ---------------------------------------------------------------------
def skyline_choices(fold: Fold, weights: Weights, seed: int, folds: int, world: World):
    """``knn`` fitted on the other tasks plus the task's other cross-fitting folds; with a
    change, its predictions read in hindsight and its choice among the available models."""
    stream, n = fold.test, len(fold.test)
    part = np.random.default_rng([seed, 5]).permutation(n) % folds
    rows = merge(fold.train, fold.validation) if fold.validation is not None else fold.train
    m = len(stream.models)
    perf, cost = np.zeros((n, m)), np.zeros((n, m))
    for g in range(folds):
        own = stream.subset(part != g)
        own.splits[:] = "train"
        router = make_router("knn", seed=seed).fit(merge(rows, own))
        held = np.flatnonzero(part == g)
        pred = router.predict([stream.texts[i] for i in held]).reorder(stream.model_names)
        if pred.override is not None:
            raise ValueError("the skyline's knn is expected to predict without an override")
        perf[held], cost[held] = pred.performance, pred.cost
    pred = Prediction(list(stream.model_names), perf, cost)
    return world.choose(world.hindsight(pred), weights)


def few_shot_choices(
    fold: Fold,
    config: OnlineConfig,
    shots: int,
    weights: Weights,
    seed: int,
    order: np.ndarray,
    world: World,
) -> np.ndarray:
    """The base refitted with ``shots`` stream rows picked at random up front (labelled
    before the stream starts, so before any change); its choice among the available models."""
    picked = order[np.random.default_rng([seed, 9]).permutation(len(order))[:shots]]
    own = fold.test.subset(np.sort(picked))
    own.splits[:] = "train"
    train = merge(fold.train, own).with_validation(0.15, seed)
    shot_fold = Fold(fold.task, train.split("train"), train.split("validation"), fold.test)
    base = fit_base(config.base, shot_fold, seed, shots=shots)
    pred = base.predict(list(fold.test.texts)).reorder(fold.test.model_names)
    return world.choose(pred, weights)


def _online(
    name: str, base: Router | None, fold: Fold, config: OnlineConfig, plan: int | None = None
) -> OnlineRouter:
    """``plan``: the labels the budget holds in all, when it is a fixed number (not a rate):
    the router's ``label_plan``, unless the variant or ``--param`` sets it."""
    params = {"encoder": ENCODER, "label_plan": plan, **config.online_params,
              **config.variants().get(name, {})}  # fmt: skip
    if name == "online-nobase" or base is None:
        router = OnlineRouter(base="none", seed=base.seed if base else 0, **params)
        return router.fit(fold.train, fold.validation)
    return OnlineRouter.around(base, fold.train, fold.validation, **params)


def _policy(name: str, ctx: dict[str, Any]):
    stream, weights, seed = ctx["stream"], ctx["weights"], ctx["seed"]
    m = len(stream.models)
    if name in ctx["config"].variants():
        router = _online(name, ctx["base"], ctx["fold"], ctx["config"], ctx.get("label_plan"))
        # variants on the same base and cells share the stream's features (the base's
        # predictions over the whole stream are the replay's main cost)
        p = router.params
        key = (router._base is None, p["cells"], p["cell_by"], p["linear_dims"])
        cache = ctx.setdefault("features", {})
        if key not in cache:
            cache[key] = router.features(list(stream.texts), weights)
        policy = OnlinePolicy(router, cache[key], weights, seed)
        world = ctx["world"]
        if world.arrival is None:
            return policy
        return ArrivingModel(policy, stream.model_names, world.model, ctx["arrival_cost"])
    if name == "linucb":
        peer = LinUCB(m, weights, seed, projection(ctx["x"], 64, seed))
    elif name == "thompson":
        peer = ThompsonCells(m, weights, seed, ctx["cells"])
    elif name == "eps-greedy":
        peer = EpsilonGreedy(m, weights, seed, start=int(ctx["fixed"]["best-single"][0]))
    else:
        return FixedPolicy(ctx["fixed"][name])
    peer.available = ctx["world"].initial  # a new model's arm opens at its arrival
    return peer


def _trace(name: str, ctx: dict[str, Any], order: np.ndarray, budget: LabelBudget | None):
    started = time.perf_counter()
    trace = replay(
        _policy(name, ctx),
        ctx["stream"],
        order,
        ctx["weights"],
        ctx["config"].feedback,
        budget,
        ctx["seed"],
        ctx["world"].arrival_event,
    )
    trace["seconds"] = time.perf_counter() - started
    return trace


def run_stream(
    fold: Fold,
    config: OnlineConfig,
    weights: Weights,
    seed: int,
    context: dict[str, Any],
    arriving: str | None = None,
) -> list[dict]:
    """Every router of ``config`` replayed on one task's stream with one seed's order, for
    every label budget (the base and the fixed choices are fitted once). ``arriving``: the
    model that joins at ``config.change``'s query (a ``new-model`` change)."""
    order = _order(len(fold.test), seed, config.max_stream)
    best_single = make_router("best-single").fit(fold.train, fold.validation)
    best_pred = best_single.predict(list(fold.test.texts)).reorder(fold.test.model_names)
    change, model = config.change, arriving
    if change is not None and change.kind != "new-model":
        model = default_model(change, fold.test, best_pred.choose(weights))
    world = World(fold.test, order, change, model)
    stream, utility = world.stream, world.utility(weights)
    own = fold  # what the online routers and their base are fitted on: without a newcomer
    if world.arrival is not None:
        views = (without_model(v, model) for v in (fold.train, fold.validation, fold.test))
        own = Fold(fold.task, *views, 0, 0)
    base = fit_base(config.base, own, seed) if config.base != "none" else None
    tie = 1e-9 * np.nan_to_num(stream.normalised_cost)
    fixed = {
        "best-single": world.choose(best_pred, weights, world.initial),
        "oracle": np.argmax(utility - tie, axis=1),
        "random": world.random(seed),
    }
    if "skyline" in config.routers:
        fixed["skyline"] = skyline_choices(fold, weights, seed, config.skyline_folds, world)
    x = embed(stream, ENCODER)
    cells = nearest(x, fit_centroids(embed(fold.train, ENCODER), 16, seed))
    ctx = {
        "stream": stream,
        "weights": weights,
        "seed": seed,
        "base": base,
        "fold": own,
        "config": config,
        "x": x,
        "cells": cells,
        "fixed": fixed,
        "world": world,
    }
    if world.arrival is not None:  # the newcomer's price, as its user knows it
        ctx["arrival_cost"] = float(np.nanmean(fold.train.normalised_cost[:, world.j]))
    if change is not None:
        context = context | {"change": change.spec, "change_model": model, "change_at": change.at}
    variants = config.variants()
    shared = {
        name: _trace(name, ctx, order, None)
        for name in config.routers
        if name in fixed or name in PEERS
    }
    records = []
    for spec in config.label_budgets:
        total = budget_size(spec, len(order))
        traces = dict(shared)
        if "few-shot" in config.routers and total > 0 and base is not None:
            ctx["fixed"] = {
                **fixed,
                "few-shot": few_shot_choices(fold, config, total, weights, seed, order, world),
            }
            traces["few-shot"] = _trace("few-shot", ctx, order, None)
        for name in (n for n in config.routers if n in variants):
            if name == "online-nobase" and base is None and "online" in variants:
                continue
            mode = "random" if name == "online-random" else "active"
            budget = budget_for(spec, len(order), mode, seed)
            fixed_total = budget is not None and budget.rate is None
            ctx["label_plan"] = budget.total if fixed_total else None
            traces[name] = _trace(name, ctx, order, budget)
        context_now = context | {"task": fold.task, "seed": seed, "label_budget": spec}
        records.extend(stream_metrics(traces, stream, order, utility, context_now, world))
    return records


def run_online(
    dataset: RoutingDataset,
    config: OnlineConfig,
    weights: Weights,
    seeds: list[int],
    context: dict[str, Any],
    source: RoutingDataset | None = None,
    on_stream=None,
) -> list[dict]:
    """Records of every (seed, streamed task, router); ``source`` = transfer from a file."""
    check_models(config.change, dataset.model_names)
    records = []
    for seed in seeds:
        if source is not None:
            folds = transfer_folds(source, dataset)
            stream = folds[0].test
            folds = [Fold("all", folds[0].train, folds[0].validation, stream, 0, 0)]
        else:
            folds = stream_folds(dataset, seed, config)
        for fold in folds:
            for model in arriving_models(config.change, fold.test.model_names,
                                         config.change_models):  # fmt: skip
                if on_stream is not None:
                    on_stream(seed, fold.task, len(fold.test))
                records.extend(run_stream(fold, config, weights, seed, context, model))
    return records


__all__ = ["Feedback", "OnlineConfig", "replay", "run_online", "run_stream"]
