"""The traffic report's label-based off-policy estimates on real RouterBench rows.

The logging policy is deterministic (one model served, propensity 1) and the router's
predictions are biased on purpose, as on a new task: the decision-based DR estimate of a
model never served is then the biased prediction. Background labels, drawn mostly from one
task as an active selection would, carry every model's real score.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from trouter.cli import app
from trouter.data.suites import load_suite
from trouter.store import Decision, Store
from trouter.store.off_policy import label_estimates, logged
from trouter.store.traffic import traffic_report

SERVED = "gpt-3.5-turbo-1106"
TARGET = "gpt-4-1106-preview"
#: labels per task: most from the task where the target model is weakest
LABELS_PER_TASK = {"mbpp": 150, "arc-challenge": 25, "winogrande": 25}
REPEAT = 8  # each fixture row is asked this many times (a returning query is routed afresh)


@pytest.fixture(scope="module")
def rows():
    """RouterBench test rows with every model's score (the committed fixture cut), each
    REPEAT times."""
    data = load_suite("routerbench")
    test = data.splits == "test"
    perf = data.performance[test]
    keep = ~np.isnan(perf).any(axis=1)
    return (
        data.model_names,
        np.tile(perf[keep], (REPEAT, 1)),
        np.tile(data.tasks[test][keep], REPEAT),
    )


def _log(store: Store, rows, labels: bool = True, seed: int = 0) -> dict[str, float]:
    """Every row served by SERVED (propensity 1) with its real score as feedback; the
    router's predictions are each model's true mean, the target's 0.25 too low; labels
    drawn per task as LABELS_PER_TASK says. The true mean score of each model."""
    names, perf, tasks = rows
    truth = dict(zip(names, perf.mean(axis=0).tolist(), strict=True))
    predicted = {m: truth[m] - (0.25 if m == TARGET else 0.0) for m in names}
    cells = sorted(set(tasks))
    now = time.time() - 3600
    served = names.index(SERVED)
    store.write_decisions([
        Decision(f"r{i}", now + i, now + 86400, "online", SERVED, cell=cells.index(tasks[i]),
                 features={"performance": predicted}, utilities={SERVED: 1.0})
        for i in range(len(perf))
    ])  # fmt: skip
    feedback = [(f"r{i}", f"r{i}", float(score), now + 1, now + 86400)
                for i, score in enumerate(perf[:, served])]  # fmt: skip
    store.backend.executemany(
        "INSERT INTO feedback (event_id, request_id, score, source, created_at, expires_at) "
        "VALUES (?, ?, ?, 'user', ?, ?)",
        feedback,
    )
    if labels:
        rng = np.random.default_rng(seed)
        for task, count in LABELS_PER_TASK.items():
            for i in rng.choice(np.flatnonzero(tasks == task), count, replace=False):
                scores = dict(zip(names, perf[i].tolist(), strict=True))
                store.add_label(f"l{i}", scores, request_id=f"r{i}", now=now + i + 0.5)
    return truth


def _holds(interval: dict, value: float) -> bool:
    return interval["low"] is not None and interval["low"] <= value <= interval["high"]


def test_labels_hold_the_truth_where_the_router_predictions_do_not(rows, tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'labels.db'}")
    truth = _log(store, rows)
    ope = traffic_report(store, rounds=1000)["off_policy"]
    target = ope["per_model"][TARGET]
    assert target["support"] == 0 and target["ips"]["mean"] is None
    assert target["labels"] == sum(LABELS_PER_TASK.values()) == ope["label_rows"]
    # DR on the router's predictions: the biased prediction, with no spread to warn of it
    assert target["dr"]["mean"] == pytest.approx(truth[TARGET] - 0.25)
    assert not _holds(target["dr"], truth[TARGET])
    # the labels' plain mean inherits their selection (mostly mbpp, the target's weakest task)
    assert not _holds(target["label_mean"], truth[TARGET])
    # DR on the labels weighs each task's label mean by the traffic's tasks
    assert _holds(target["label_dr"], truth[TARGET]), (target, truth[TARGET])
    held = sum(_holds(ope["per_model"][m]["label_dr"], truth[m]) for m in truth)
    assert held >= len(truth) - 2, held  # nominal 95%: one or two of eleven may miss
    served = ope["per_model"][SERVED]  # served with propensity 1: DR is its observed mean
    assert served["label_dr"]["mean"] == pytest.approx(truth[SERVED])
    assert ope["best_single"] == TARGET == max(truth, key=truth.get)
    assert ope["best_single_by"] == "label_dr"
    assert _holds(ope["greedy_policy"]["label_dr"], truth[SERVED])
    json.loads(json.dumps(ope, allow_nan=False))
    store.close()


def test_the_label_bootstrap_is_reproducible_by_seed(rows, tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'seed.db'}")
    _log(store, rows)
    first = traffic_report(store, rounds=200, now=time.time())["off_policy"]
    again = traffic_report(store, rounds=200, now=time.time())["off_policy"]
    assert first["per_model"] == again["per_model"]
    decisions, labels = store.decisions(), store.label_rows()
    scores = {rid: s for rid, s, _, _ in store.feedback_rows()}
    log = logged(decisions, scores, labels)
    seeded = [label_estimates(log, rounds=200, seed=s)["per_model"][TARGET] for s in (0, 0, 1)]
    assert seeded[0] == seeded[1] != seeded[2]
    assert seeded[0]["label_dr"]["mean"] == seeded[2]["label_dr"]["mean"]  # the point estimate
    store.close()


def test_without_labels_the_label_fields_are_null(rows, tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'none.db'}")
    _log(store, rows, labels=False)
    ope = traffic_report(store, rounds=100)["off_policy"]
    assert ope["label_rows"] == 0 and ope["best_single_by"] == "dr"
    assert ope["best_single"] == SERVED  # the only model served
    for row in ope["per_model"].values():
        assert row["labels"] == 0
        assert row["label_mean"] == row["label_dr"] == {"mean": None, "low": None, "high": None}
    assert ope["greedy_policy"]["label_dr"]["mean"] is None
    json.loads(json.dumps(ope, allow_nan=False))
    store.close()


def test_labels_without_scored_decisions_give_the_label_mean_alone(tmp_path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'only.db'}")
    for i in range(10):
        store.add_label(f"l{i}", {"a": float(i % 2), "b": 1.0} if i else {"a": 0.0})
    ope = traffic_report(store, rounds=100)["off_policy"]
    assert ope["per_model"]["a"]["label_mean"]["mean"] == pytest.approx(0.5)
    assert ope["per_model"]["b"]["labels"] == 9  # a row may lack a model's score
    assert ope["per_model"]["b"]["label_mean"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert ope["per_model"]["a"]["label_dr"]["mean"] is None
    assert ope["best_single"] is None and ope["best_single_by"] == "dr"
    store.close()


def test_report_traffic_prints_the_label_estimates(rows, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = Store.open(url)
    _log(store, rows)
    store.close()
    runner = CliRunner()
    out = runner.invoke(app, ["report", "traffic", "--store", url, "--json", "--rounds", "50"])
    assert out.exit_code == 0, out.output
    target = json.loads(out.output)["off_policy"]["per_model"][TARGET]
    assert {"ips", "dr", "label_mean", "label_dr", "labels", "support"} <= set(target)
    table = runner.invoke(app, ["report", "traffic", "--store", url, "--rounds", "50"],
                          env={"COLUMNS": "200"})  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "DR on labels" in table.output and "best single (by DR on labels)" in table.output
