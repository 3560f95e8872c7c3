"""How many background labels the online router's tests need, per streamed task (not a test).

The online router leaves best-single only once paired labels show a gain, one-sided, at the
error rate of its doubling looks (the k-th look, at 8 x 2^k labels, runs at alpha / 2^(k+1),
alpha = 1 - the router's default confidence).
This prints, for each task's stream, the per-query utility gain over best-single (the
reference: its own gain is 0) and its standard deviation for the oracle (the bound) and two
policies the router could move to:

* ``skyline``: the in-domain kNN cross-fitted on the task's own labels (the best the router's
  base can become; its gain is what "share of the skyline's gain" measures);
* ``traffic best-single``: the one model best on the stream in hindsight (tested, as the
  anchor's move is, at the Bonferroni share of the error rate among the other models).

and the labels at which such a gain first passes the test at its look with even odds (the
mean at least the look's quantile times its standard error), with doubling looks and with
every label tested at the full rate. With a budget of 25 labels the doubling looks stop at 16.

Run: ``TROUTER_DATA_DIR=../shared/data .venv/bin/python scripts/online_power.py routerbench``
(``--tasks gsm8k,mmlu`` to pick tasks, ``--seed`` for the skyline's folds).
"""

from __future__ import annotations

import argparse
import inspect

import numpy as np
from scipy.special import ndtri

from trouter.data.suites import load_suite
from trouter.evaluation.online import OnlineConfig, skyline_choices, stream_folds
from trouter.evaluation.online_changes import World
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers import make_router
from trouter.routers.online import OnlineRouter

#: The online router's defaults: error rate (1 - confidence) and first look (min_evidence).
_DEFAULTS = inspect.signature(OnlineRouter.__init__).parameters
ALPHA = 1.0 - _DEFAULTS["confidence"].default
FIRST, LOOKS = int(_DEFAULTS["min_evidence"].default), 10


def labels_needed(gain: float, sd: float, doubling: bool, rivals: int = 1) -> int | None:
    """Labels at which ``gain`` first reaches the test's bar at even odds (None: never); the
    test of one model among ``rivals`` runs at the Bonferroni share of the error rate."""
    alpha = ALPHA / rivals
    if gain <= 0:
        return None
    if not doubling:  # every label from the first look's count on (min_evidence)
        return max(FIRST, int(np.ceil((ndtri(1 - alpha) * sd / gain) ** 2)))
    for k in range(LOOKS):
        n = FIRST * 2**k
        if gain * np.sqrt(n) / sd >= ndtri(1 - alpha * 2.0 ** -(k + 1)):
            return n
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suite")
    parser.add_argument("--tasks", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_suite(args.suite)
    config = OnlineConfig(tasks=tuple(t for t in args.tasks.split(",") if t))
    weights = SCENARIOS["balanced"]
    print(f"### {args.suite}: labels the online router's tests need (balanced)\n")
    print("| task | stream | policy | gain vs best-single | sd of the per-query gain "
          "| labels needed, doubling looks | labels needed, every label |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for fold in stream_folds(dataset, args.seed, config):
        stream = fold.test
        world = World(stream, np.arange(len(stream)), None, None)
        utility = world.utility(weights)
        rows = np.arange(len(stream))
        best = make_router("best-single").fit(fold.train, fold.validation)
        anchor = best.predict(list(stream.texts)).reorder(stream.model_names).choose(weights)
        policies = {
            "oracle": np.argmax(utility, axis=1),
            "skyline": skyline_choices(fold, weights, args.seed, config.skyline_folds, world),
            "traffic best-single": np.full(len(stream), int(np.argmax(utility.mean(axis=0)))),
        }
        for name, chosen in policies.items():
            diff = utility[rows, chosen] - utility[rows, anchor]
            gain, sd = float(diff.mean()), float(diff.std(ddof=1))
            # the anchor's move is one model picked among the others: Bonferroni
            rivals = len(stream.models) - 1 if name == "traffic best-single" else 1
            cells = [labels_needed(gain, sd, d, rivals) for d in (True, False)]
            shown = ["never" if c is None else str(c) for c in cells]
            print(f"| {fold.task} | {len(stream)} | {name} | {gain:+.4f} | {sd:.3f} | "
                  f"{shown[0]} | {shown[1]} |")  # fmt: skip


if __name__ == "__main__":
    main()
