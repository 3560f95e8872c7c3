"""Change scenarios of the online replay (drift, a new model), on real RouterBench rows."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import trouter.evaluation.online as online
from trouter.cli import app
from trouter.data.suites import load_suite
from trouter.evaluation.folds import Fold
from trouter.evaluation.online import OnlineConfig, run_stream, stream_folds
from trouter.evaluation.online_changes import (
    ArrivingModel,
    World,
    parse_change,
    without_model,
)
from trouter.evaluation.online_policies import OnlinePolicy
from trouter.evaluation.scenarios import SCENARIOS
from trouter.routers.base import make_router
from trouter.routers.online import OnlineRouter

BALANCED = SCENARIOS["balanced"]
AT = 120


@pytest.fixture(scope="module")
def fold() -> Fold:
    """The mbpp rows streamed; the base knows only ARC-Challenge and WinoGrande."""
    (fold,) = stream_folds(load_suite("routerbench"), 0, OnlineConfig(tasks=("mbpp",)))
    return fold


def _records(fold: Fold, change: str | None, routers, budget="0", arriving=None) -> dict:
    config = OnlineConfig(base="none", routers=routers, label_budgets=(budget,),
                          change=parse_change(change))  # fmt: skip
    return {r["router"]: r for r in run_stream(fold, config, BALANCED, 0, {}, arriving)}


def test_a_score_drop_is_what_every_router_is_scored_on_after_t_only(fold):
    routers = ("best-single", "oracle")
    still = _records(fold, None, routers)
    drop = _records(fold, f"score-drop@{AT}", routers)
    model = drop["best-single"]["change_model"]
    j = fold.test.model_names.index(model)
    assert drop["best-single"]["selection"][j] == len(fold.test)  # best-single's own model
    order = online._order(len(fold.test), 0, None)
    after = fold.test.performance[order[AT:], j]
    lost = BALANCED.performance * np.minimum(after, 0.2).sum() / len(order)
    assert lost > 0.01
    assert drop["best-single"]["utility"] == pytest.approx(still["best-single"]["utility"] - lost)
    for name in routers:  # the windows before T are untouched, the one after T is lower
        assert drop[name]["windows"]["0-100"] == still[name]["windows"]["0-100"]
    assert drop["best-single"]["windows"]["100-end"] < still["best-single"]["windows"]["100-end"]
    assert drop["oracle"]["utility"] < still["oracle"]["utility"]
    assert drop["best-single"]["utility_after_change"] < still["best-single"]["utility"]


def test_a_price_drop_makes_the_model_cheaper_after_t(fold):
    routers = ("best-single", "oracle")
    still = _records(fold, None, routers)
    cheap = _records(fold, f"price-drop@{AT}", routers)
    j = fold.test.model_names.index(cheap["oracle"]["change_model"])
    assert j == int(np.nanmean(fold.test.normalised_cost, axis=0).argmax())
    # the oracle now finds the (cheaper) model worth serving more often, and gains
    assert cheap["oracle"]["selection"][j] > still["oracle"]["selection"][j]
    assert cheap["oracle"]["utility"] > still["oracle"]["utility"]
    assert cheap["oracle"]["windows"]["0-100"] == still["oracle"]["windows"]["0-100"]


def test_a_new_model_is_served_by_no_policy_before_it_arrives(fold, monkeypatch):
    order = online._order(len(fold.test), 0, None)
    utility = BALANCED.utility(fold.test.performance, fold.test.normalised_cost)
    # the model the oracle would serve most: every policy would pick it without the change
    model = fold.test.model_names[int(np.bincount(utility.argmax(axis=1)).argmax())]
    j = fold.test.model_names.index(model)
    seen = {}

    def capture(traces, stream, order_, utility_, context, world):
        seen.update(traces=traces, world=world)
        return []

    monkeypatch.setattr(online, "stream_metrics", capture)
    routers = ("best-single", "oracle", "random", "online", "linucb", "thompson", "eps-greedy")
    _records(fold, f"new-model@{AT}", routers, budget="25/300", arriving=model)
    traces, world = seen["traces"], seen["world"]
    assert np.isnan(world.stream.performance[order[:AT], j]).all()
    for name, trace in traces.items():
        assert not (trace["chosen"][:AT] == j).any(), name
    assert (traces["oracle"]["chosen"][AT:] == j).mean() > 0.2
    assert (traces["random"]["chosen"][AT:] == j).any()


def test_the_online_router_labels_a_newcomer_first(fold):
    model = fold.test.model_names[0]
    j = 0
    train = without_model(fold.train, model)
    base = make_router("best-single").fit(train)
    router = OnlineRouter.around(base, train, label_min=3, label_cell_min=0)
    features = router.features(list(fold.test.texts), BALANCED)
    order = np.arange(len(fold.test))
    world = World(fold.test, order, parse_change(f"new-model@{AT}"), model)
    policy = ArrivingModel(OnlinePolicy(router, features, BALANCED, 0), fold.test.model_names,
                           model, float(np.nanmean(fold.train.normalised_cost[:, j])))  # fmt: skip
    stream = world.stream

    def label(t: int) -> dict:
        policy.label_requested()
        return {"id": f"l{t}", "kind": "label", "t": t, "row": t,
                "scores": stream.performance[t], "costs": stream.normalised_cost[t]}  # fmt: skip

    policy.learn([label(t) for t in range(6)])
    assert policy.choose(6, 6)[3] < 3.0  # every model it knows has its labels
    policy.add_model(j)
    assert router.models_[-1] == model
    assert policy.choose(AT, AT)[3] == 3.0  # the newcomer is short of labels: first in line
    policy.learn([label(t) for t in range(AT, AT + 3)])
    assert router.stats_.label_count[router.stats_.total][-1] == 3
    # the newcomer's scores reached the router under its name (the columns are mapped)
    np.testing.assert_array_equal(router.label_perf_[-3:, -1], stream.performance[AT : AT + 3, j])


@pytest.mark.parametrize(
    "args",
    [
        ["--change", "score-drop"],
        ["--change", "melt@400"],
        ["--change", "price-drop@-3"],
        ["--change", "new-model:no-such-model@300"],
        ["--change", "score-drop@400", "--change-models", "2"],
    ],
)
def test_bad_change_values_are_one_paragraph(args):
    result = CliRunner().invoke(
        app, ["eval", "--setting", "online", "--suite", "routerbench", "--no-progress", *args]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "--change" in result.output
