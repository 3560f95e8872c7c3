"""Choose the online router's design on validation streams (never the test rows).

For each task of a suite, the stream is the task's train and validation rows only; the base
is fitted on the other tasks. The comparisons:

* ``cells`` (base best-single, cheap, so that only the cells differ): one cell (a per-task
  posterior) against k-means cells (4, 16) on the static embedding, the leaves of a
  TRouter's task-type posterior, and a linear model on the embedding (online_cells);
  ``cells-auto``: the same with the default base, ``auto``;
* ``anchor`` (base ``auto``): what is served before the base has earned its choices -
  the training rows' best-single, best-single re-estimated on the background labels, or
  the base itself;
* ``test`` (base ``auto``): Student's t or normal quantiles in the anchor's and the base's
  tests;
* ``looks`` (base ``auto``): the tests re-run after every label, or only at doubling label
  counts with the error rate split over the looks;
* ``first-look`` (base ``auto``): the first of the doubling looks at 8 or at 12 labels;
* ``plan`` (base ``auto``): with a fixed label budget, the doubling looks alone, or a last
  look at the budget's total that spends the error rate they left (``label_plan``, what
  ``trouter eval --setting online`` gives the router for a budget of N or N/WINDOW);
* ``favourite`` (base ``auto``): every rival tested against the anchor at the same
  Bonferroni level, or the rival the base predicts best named in advance and tested at
  half the error rate, the others sharing the other half (``favourite``);
* ``keep`` (base ``auto``): each look decides afresh on the labels it reads, or a move an
  earlier look made stands until the labels rule it out (``keep_moves``);
* ``confidence`` (base ``auto``): the tests' confidence (one minus the error rate spread
  over the doubling looks), 0.95, 0.9 or 0.8;
* ``drift`` (base ``auto``): level shifts (online_drift) off, or found at z 4.5 or 4;
* ``challenge`` (base ``auto``): the share of the queries where the base's proposal differs
  from the anchor served the proposal, as a served A/B test: 0 (off), 5%, 10% or 20%;
* ``challenge-margin`` (base ``auto``): at 5%, the gain per drawn query the served test
  must show: 0, 0.05 or 0.1.

Prints a markdown table of the task-mean gain over best-single and the last-quarter gain,
mean ± std over seeds, at the label budgets given, with the oracle's and random's beside them
(``--compare fixed``: those two alone). Run:
``TROUTER_DATA_DIR=../shared/data .venv/bin/python scripts/online_variants.py routerbench
--compare cells`` (``--scenario`` and ``--feedback-rate/-noise/-delay`` as for ``trouter eval
--setting online``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from trouter.data.suites import load_suite
from trouter.evaluation.folds import Fold
from trouter.evaluation.online import Feedback, OnlineConfig, run_stream, stream_folds
from trouter.evaluation.scenarios import SCENARIOS

COMPARISONS = {
    "fixed": ("best-single", {}),
    "cells": (
        "best-single",
        {
            "online-cells1": {"cells": 1},
            "online-cells4": {"cells": 4},
            "online-cells16": {"cells": 16},
            "online-taxonomy": {"cell_by": "taxonomy"},
            "online-linear": {"cell_by": "linear"},
            "online-linear-p2": {"cell_by": "linear", "linear_penalty": 2.0},
        },
    ),
    "cells-auto": (
        "auto",
        {
            "online-cells1": {"cells": 1},
            "online-cells16": {"cells": 16},
            "online-taxonomy": {"cell_by": "taxonomy"},
            "online-linear": {"cell_by": "linear"},
        },
    ),
    "anchor": (
        "auto",
        {
            "online-anchor-trained": {"anchor": "best-single", "anchor_learns": False},
            "online-anchor-learns": {"anchor": "best-single", "anchor_learns": True},
            "online-base": {"anchor": "base"},
        },
    ),
    "test": (
        "auto",
        {
            "online-t": {"student_t": True},
            "online-normal": {"student_t": False},
        },
    ),
    "looks": (
        "auto",
        {
            "online-every": {"looks": "every"},
            "online-doubling": {"looks": "doubling"},
        },
    ),
    "first-look": (
        "auto",
        {
            "online-first8": {"first_look": 8},
            "online-first12": {"first_look": 12},
        },
    ),
    "plan": (
        "auto",
        {
            "online-noplan": {"label_plan": None},
            "online-plan": {},
        },
    ),
    "favourite": (
        "auto",
        {
            "online-bonferroni": {"favourite": False},
            "online-favourite": {"favourite": True},
        },
    ),
    "keep": (
        "auto",
        {
            "online-fresh": {"keep_moves": False},
            "online-keep": {"keep_moves": True},
        },
    ),
    "confidence": (
        "auto",
        {
            "online-conf95": {"confidence": 0.95},
            "online-conf90": {"confidence": 0.9},
            "online-conf80": {"confidence": 0.8},
        },
    ),
    "drift": (
        "auto",
        {
            "online-drift-off": {"drift_z": None},
            "online-drift45": {"drift_z": 4.5},
            "online-drift4": {"drift_z": 4.0},
        },
    ),
    "challenge-margin": (
        "auto",
        {
            "online-challenge0": {"challenge": 0.0},
            "online-challenge5": {"challenge": 0.05, "challenge_margin": 0.0},
            "online-challenge5-m05": {"challenge": 0.05, "challenge_margin": 0.05},
            "online-challenge5-m10": {"challenge": 0.05, "challenge_margin": 0.1},
        },
    ),
    "challenge": (
        "auto",
        {
            "online-challenge0": {"challenge": 0.0},
            "online-challenge5": {"challenge": 0.05},
            "online-challenge10": {"challenge": 0.1},
            "online-challenge20": {"challenge": 0.2},
        },
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="25/500,100")
    parser.add_argument("--tasks", default="")
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="cells")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="balanced")
    parser.add_argument("--feedback-rate", type=float, default=1.0)
    parser.add_argument("--feedback-noise", type=float, default=0.0)
    parser.add_argument("--feedback-delay", type=int, default=0)
    args = parser.parse_args()
    dataset = load_suite(args.suite)
    base, variants = COMPARISONS[args.compare]
    config = OnlineConfig(
        base=base,
        label_budgets=tuple(args.budgets.split(",")),
        routers=("best-single", "oracle", "random", *variants),
        extra_variants=variants,
        tasks=tuple(t for t in args.tasks.split(",") if t),
        feedback=Feedback(args.feedback_rate, args.feedback_noise, args.feedback_delay),
    )
    results: dict[tuple[str, str], dict[int, list[tuple[float, ...]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for seed in range(args.seeds):
        for fold in stream_folds(dataset, seed, config):
            rows = dataset.subset(
                (dataset.tasks == fold.task) & (dataset.splits != "test") & dataset.complete_rows
            )
            if len(rows) < 100:
                continue
            val_fold = Fold(fold.task, fold.train, fold.validation, rows, 0, 0)
            for r in run_stream(val_fold, config, SCENARIOS[args.scenario], seed, {}):
                results[(r["label_budget"], r["router"])][seed].append(
                    (r["gain_vs_best_single"], r["last_quarter_gain"], r["worst_window_gap"])
                )
    print(f"### {args.suite}: {args.compare} on validation streams (train + validation rows), "
          f"{args.scenario}, feedback {vars(config.feedback)}\n")
    print(
        "| label budget | variant | tasks | gain vs best-single | last-quarter gain "
        "| worst stream gain | worst 200-window gap |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (budget, router), per_seed in sorted(results.items()):
        if router not in variants and router not in ("oracle", "random"):
            continue
        gains = [np.mean([g[0] for g in v]) for v in per_seed.values()]
        lasts = [np.mean([g[1] for g in v]) for v in per_seed.values()]
        streams = [g for v in per_seed.values() for g in v]
        tasks = len(next(iter(per_seed.values())))
        print(
            f"| {budget} | {router} | {tasks} | {np.mean(gains):+.4f} ± {np.std(gains):.4f} | "
            f"{np.mean(lasts):+.4f} ± {np.std(lasts):.4f} | {min(g[0] for g in streams):+.4f} "
            f"| {min(g[2] for g in streams):+.4f} |"
        )


if __name__ == "__main__":
    main()
