"""cluster, ridge, dataset-oracle, the guard and auto on real RouterBench slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slices import routerbench_slices

from trouter.data.dataset import RoutingDataset
from trouter.evaluation import metrics
from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.routers import Router, make_router
from trouter.routers.guard import evidence_folds
from trouter.routers.guard_evidence import decide
from trouter.routers.tuning import merge, validation_loss

BALANCED = SCENARIOS["balanced"]


@pytest.fixture(scope="module")
def bench(data_dir: Path) -> dict[str, RoutingDataset]:
    return routerbench_slices(train=120, validation=30, test=60)


def _utility(router: Router, test: RoutingDataset, weights: Weights = BALANCED) -> float:
    pred = router.predict(test if router.needs_labels else list(test.texts))
    pred = pred.reorder(test.model_names)
    return metrics.choice_metrics(test, pred.choose(weights), weights)["utility"]


def _scorable(test: RoutingDataset) -> RoutingDataset:
    return metrics.scorable_rows(test)[0]


@pytest.mark.parametrize("name", ["cluster", "ridge"])
def test_fast_baselines_learn_more_than_the_mean(bench, name: str) -> None:
    router = make_router(name, seed=0).fit(bench["train"], bench["validation"])
    best = make_router("best-single").fit(bench["train"])
    pred = router.predict(list(bench["test"].texts))
    assert pred.performance.shape == (len(bench["test"]), 11)
    assert (pred.performance >= 0).all() and (pred.cost <= 1).all()
    # Held-out prediction error below the per-model means (what best-single knows).
    ours = validation_loss(pred, bench["test"])
    assert ours < validation_loss(best.predict(list(bench["test"].texts)), bench["test"])


def test_dataset_oracle_sits_between_best_single_and_oracle(bench) -> None:
    test = _scorable(bench["test"])
    routers = {
        n: make_router(n).fit(bench["train"]) for n in ("best-single", "dataset-oracle", "oracle")
    }
    for weights in SCENARIOS.values():
        u = {n: _utility(r, test, weights) for n, r in routers.items()}
        assert u["best-single"] <= u["dataset-oracle"] + 1e-12 <= u["oracle"] + 2e-12
    pred = routers["dataset-oracle"].predict(test)
    for task in set(test.tasks):  # one choice per task: the task's best model in hindsight
        assert len(set(pred.choose(BALANCED)[test.tasks == task])) == 1


def test_evidence_folds_hold_out_whole_tasks_but_keep_their_shots(bench) -> None:
    pool = merge(bench["train"], bench["validation"])
    fold = evidence_folds(pool, n_folds=4, shots=10, seed=0)
    for task in set(pool.tasks):
        mine = pool.tasks == task
        assert (fold[mine] == -1).sum() == 10, "each held-out task keeps its K shots in the fit"
        assert len(set(fold[mine & (fold >= 0)])) == 1, "a task is held out as a whole"
    random = evidence_folds(pool, n_folds=4, shots=None, seed=0)
    assert (random >= 0).all() and len(set(random)) == 4


def test_guard_wearing_a_random_router_falls_back_to_best_single(bench) -> None:
    # at 99% confidence: 3 scenarios x 4 cells of a 90% bound let chance through now and then
    guarded = make_router("guarded", seed=0, members="random", cells=4, confidence=0.99).fit(
        bench["train"], bench["validation"]
    )
    best = make_router("best-single").fit(bench["train"], bench["validation"])
    test = _scorable(bench["test"])
    for weights in SCENARIOS.values():
        assert set(guarded.explain(weights)) == {"best-single"}
        ours = guarded.predict(list(test.texts)).choose(weights)
        assert (ours == best.predict(list(test.texts)).choose(weights)).all()


def test_auto_routes_by_evidence_and_survives_save_load(bench, tmp_path: Path) -> None:
    auto = make_router("auto", seed=0, cells=4).fit(bench["train"], bench["validation"])
    test = _scorable(bench["test"])
    chosen = auto.predict(list(test.texts)).choose(BALANCED)
    assert chosen.shape == (len(test),)
    decisions = auto.explain(SCENARIOS["performance-first"])
    assert set(decisions) <= set(auto.candidate_names) | {"best-single"}
    # Performance-first on RouterBench, per-query routing wins clearly on evidence somewhere.
    assert set(decisions) != {"best-single"}
    auto.save(tmp_path / "auto")
    loaded = Router.load(tmp_path / "auto")
    assert (loaded.predict(list(test.texts)).choose(BALANCED) == chosen).all()
    with pytest.raises(ValueError, match="cannot wear another guard"):
        make_router("guarded", members="auto")


def _new_task_fold(bench, target: str, shots: int) -> tuple[RoutingDataset, RoutingDataset]:
    """Training rows without ``target`` plus its first ``shots`` train rows; its test rows."""
    train = bench["train"]
    own = np.flatnonzero(train.tasks == target)[:shots]
    fit = (
        merge(train.subset(train.tasks != target), train.subset(own))
        if shots
        else (train.subset(train.tasks != target))
    )
    test = _scorable(bench["test"])
    return fit, test.subset(test.tasks == target)


def test_auto_on_a_new_task_needs_evidence_from_several_tasks(bench) -> None:
    # RouterBench has three tasks: holding one out leaves two, too few to say anything
    # about a third, so auto must be exactly best-single for every weight.
    fit, test = _new_task_fold(bench, "mbpp", shots=0)
    auto = make_router("auto", seed=0, shots=0, target_task="mbpp").fit(fit)
    best = make_router("best-single").fit(fit)
    assert auto.mode_ == "new-task"
    for weights in SCENARIOS.values():
        assert set(auto.explain(weights)) == {"best-single"}
        ours = auto.predict(list(test.texts)).choose(weights)
        assert (ours == best.predict(list(test.texts)).choose(weights)).all()


def test_auto_learns_from_the_shots_of_a_new_task(bench, tmp_path: Path) -> None:
    # MBPP's best models differ from the pool's best on ARC/Winogrande; 25 labelled MBPP
    # rows are evidence enough to leave best-single, and it pays on MBPP's test rows.
    fit, test = _new_task_fold(bench, "mbpp", shots=25)
    auto = make_router("auto", seed=0, shots=25, target_task="mbpp").fit(fit)
    best = make_router("best-single").fit(fit)
    assert auto.mode_ == "shots" and "task-best" in auto.candidate_names
    assert auto.explain(BALANCED) != ["best-single"]
    assert _utility(auto, test) > _utility(best, test) + 0.05
    auto.save(tmp_path / "auto")
    loaded = Router.load(tmp_path / "auto")
    same = loaded.predict(list(test.texts)).choose(BALANCED)
    assert (same == auto.predict(list(test.texts)).choose(BALANCED)).all()


def test_new_task_decision_is_over_tasks_not_rows() -> None:
    rng = np.random.default_rng(0)
    tasks = np.repeat(["a", "b", "c", "d"], 50)
    settings = dict(confidence=0.9, margin=0.0, min_rows=30, min_tasks=3, n_boot=200, seed=0)

    def gains(per_task: list[float]) -> np.ndarray:
        candidate = np.repeat(per_task, 50) + rng.normal(0, 0.01, len(tasks))
        return np.stack([np.zeros(len(tasks)), candidate], axis=1)

    assert decide(gains([0.02, 0.03, 0.02, 0.025]), tasks, -1, "new-task", **settings) == 0
    # one task that loses badly: 150 winning rows do not outvote it
    assert decide(gains([0.03, 0.03, 0.03, -0.08]), tasks, -1, "new-task", **settings) == -1
    # the same rows pooled as in-domain evidence would switch (rows, not tasks, are the unit)
    assert decide(gains([0.03, 0.03, 0.03, -0.02]), tasks, -1, "in-domain", **settings) == 0
    two = tasks[:100]
    assert decide(gains([0.03, 0.03, 0.03, 0.03])[:100], two, -1, "new-task", **settings) == -1


def test_the_served_guard_keeps_its_fallback_and_shows_real_utilities(bench, tmp_path) -> None:
    """``trouter.load().route()`` (and so the proxy) must choose what the evaluation scored:
    the guard's best-single fallback, named as the reason, with the router's own predicted
    utilities on display (no bonus folded into them)."""
    import trouter

    # at 99% confidence: 3 scenarios x 4 cells of a 90% bound let chance through now and then
    guarded = make_router("guarded", seed=0, members="random", cells=4, confidence=0.99).fit(
        bench["train"], bench["validation"]
    )
    best = make_router("best-single").fit(bench["train"], bench["validation"])
    service = trouter.load(guarded.save(tmp_path / "guarded"))
    texts = list(_scorable(bench["test"]).texts)
    for name, weights in SCENARIOS.items():
        expected = [best.models_[i] for i in best.predict(texts).choose(weights)]
        results = service.route(texts, scenario=name)
        assert [r.model for r in results] == expected
        for r in results:
            assert r.reason == "guard: best-single in this cell"
            for m in service.models:
                shown = weights.performance * r.performance[m] + weights.cost * r.cost[m]
                assert r.utility[m] == pytest.approx(shown) and -1 <= r.utility[m] <= 1


def test_auto_encodes_a_query_once_with_the_static_encoder(bench) -> None:
    auto = make_router("auto", seed=0, cells=2, folds=2, n_boot=50).fit(
        bench["train"], bench["validation"]
    )
    assert auto.encoder == "static"
    assert {member.encoder for member in auto._members} == {"static"}
