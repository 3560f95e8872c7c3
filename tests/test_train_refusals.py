"""`trouter train` refuses files it cannot learn from; routing never picks an unknown model;
bad numbers on the command line are refused (exit 2) before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train_route_cli import UNSEEN_MATH, run, write_labelled

from trouter.evaluation.scenarios import SCENARIOS, Weights
from trouter.routers.base import Prediction


def _rewrite(source: Path, target: Path, change) -> Path:
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    target.write_text("".join(json.dumps(change(row)) + "\n" for row in rows))
    return target


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("refusals") / "labelled.jsonl"
    write_labelled(path, n_real=4)
    return path


def _train(train_file: Path, out: Path, router: str = "best-single", *extra: str):
    return run(["train", "--router", router, "--train-file", str(train_file),
                "--out", str(out), *extra])  # fmt: skip


def test_a_file_without_model_results_is_refused(labelled, tmp_path):
    empty = _rewrite(labelled, tmp_path / "empty.jsonl", lambda r: {**r, "results": {}})
    result = _train(empty, tmp_path / "router")
    assert result.exit_code == 1 and "no row has any model results" in result.output
    assert not (tmp_path / "router").exists()


def test_an_all_masked_file_is_refused(labelled, tmp_path):
    def mask(row):
        for cell in row["results"].values():
            cell.update(performance=None, error="answer: server (HTTP 500) after 6 attempts")
        return row

    masked = _rewrite(labelled, tmp_path / "masked.jsonl", mask)
    result = _train(masked, tmp_path / "router")
    assert result.exit_code == 1, result.output
    assert "every performance is null" in result.output and "Traceback" not in result.output


def test_a_model_whose_calls_all_failed_is_left_out_and_never_chosen(labelled, tmp_path):
    def big_fails(row):
        row["results"]["big"].update(performance=None, error="answer: timeout")
        return row

    failing = _rewrite(labelled, tmp_path / "big-fails.jsonl", big_fails)
    result = _train(failing, tmp_path / "router")
    assert result.exit_code == 0, result.output
    assert "leaving out big" in result.output
    meta = json.loads((tmp_path / "router" / "router.json").read_text())
    assert meta["models"] == ["mathstral", "coder"]
    routed = run(["route", UNSEEN_MATH, "--model-dir", str(tmp_path / "router"),
                  "--scenario", "performance-first", "--json"])  # fmt: skip
    assert routed.exit_code == 0, routed.output
    record = json.loads(routed.stdout)
    assert record["model"] != "big" and "NaN" not in routed.stdout


def test_prediction_never_chooses_a_nan_and_refuses_all_nan_rows():
    perf = np.array([[np.nan, 0.2, 0.1], [0.9, np.nan, 0.5]])
    cost = np.array([[0.0, 0.1, 0.1], [0.2, 0.0, np.nan]])
    prediction = Prediction(["a", "b", "c"], perf, cost)
    for weights in SCENARIOS.values():
        assert prediction.choose(weights).tolist() == [1, 0]
    with pytest.raises(ValueError, match="no model has a finite predicted utility for query 0"):
        Prediction(["a"], np.array([[np.nan]]), np.array([[0.1]])).choose(Weights(0.5, -0.5))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "nan:nan"], "both weights must be finite numbers"),
        (["--weights", "0.5:-inf"], "both weights must be finite numbers"),
    ],
)
def test_route_rejects_non_finite_weights(tmp_path, args, message):
    result = run(["route", "hello", "--model-dir", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(
    ("router", "param", "message"),
    [
        ("knn", "k=-3", "k must be a whole number >= 1"),
        ("knn", "ks=[5, 0]", "k must be a whole number >= 1"),
        ("mlp", "lr=-1", "lr=-1"),
        ("mf", "dim=[0]", "dim=[0]"),
    ],
)
def test_out_of_range_router_parameters_are_refused(labelled, tmp_path, router, param, message):
    result = _train(labelled, tmp_path / "router", router, "--param", param)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "router").exists()


@pytest.mark.parametrize("option", ["--per-leaf", "--per-call"])
def test_synth_qa_zero_per_leaf_is_a_usage_error(tmp_path, option):
    result = run(["synth", "qa", "--taxonomy", str(tmp_path / "t.json"), "--out",
                  str(tmp_path / "qa.jsonl"), option, "0"])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert option in result.output and "greater than or equal to 1" in result.output
