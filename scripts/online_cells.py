"""Choose the online router's cell structure on validation streams (never the test rows).

For each task of a suite, the stream is the task's train and validation rows only; the base
is best-single fitted on the other tasks (cheap, so that only the cells differ). Compared:
one cell (a per-task posterior), and k-means cells (4, 16) on the static embedding, at the
label budgets given. Prints a markdown table of the task-mean gain over best-single and the
last-quarter gain, mean ± std over seeds. Run:
``TROUTER_DATA_DIR=../shared/data .venv/bin/python scripts/online_cells.py routerbench``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from trouter.data.suites import load_suite
from trouter.evaluation.folds import Fold
from trouter.evaluation.online import OnlineConfig, run_stream, stream_folds
from trouter.evaluation.scenarios import SCENARIOS

VARIANTS = {
    "online-cells1": {"cells": 1},
    "online-cells4": {"cells": 4},
    "online-cells16": {"cells": 16},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="25/500,100")
    parser.add_argument("--tasks", default="")
    args = parser.parse_args()
    dataset = load_suite(args.suite)
    config = OnlineConfig(
        base="best-single",
        label_budgets=tuple(args.budgets.split(",")),
        routers=("best-single", "oracle", *VARIANTS),
        extra_variants=VARIANTS,
        tasks=tuple(t for t in args.tasks.split(",") if t),
    )
    results: dict[tuple[str, str], dict[int, list[tuple[float, float]]]] = defaultdict(
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
            for r in run_stream(val_fold, config, SCENARIOS["balanced"], seed, {}):
                results[(r["label_budget"], r["router"])][seed].append(
                    (r["gain_vs_best_single"], r["last_quarter_gain"])
                )
    print(f"### {args.suite}: cell structures on validation streams (train + validation rows)\n")
    print("| label budget | variant | tasks | gain vs best-single | last-quarter gain |")
    print("|---|---|---:|---:|---:|")
    for (budget, router), per_seed in sorted(results.items()):
        if router not in VARIANTS:
            continue
        gains = [np.mean([g for g, _ in v]) for v in per_seed.values()]
        lasts = [np.mean([q for _, q in v]) for v in per_seed.values()]
        tasks = len(next(iter(per_seed.values())))
        print(
            f"| {budget} | {router} | {tasks} | {np.mean(gains):+.4f} ± {np.std(gains):.4f} | "
            f"{np.mean(lasts):+.4f} ± {np.std(lasts):.4f} |"
        )


if __name__ == "__main__":
    main()
