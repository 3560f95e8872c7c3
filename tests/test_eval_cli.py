"""End-to-end ``trouter eval`` on a small deterministic slice of a real suite."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trouter.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def cold_start_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path, str]:
    out = tmp_path_factory.mktemp("eval")
    result = runner.invoke(
        app,
        [
            "eval", "--suite", "routerbench", "--setting", "cold-start",
            "--routers", "cheapest", "--scenario", "all", "--seeds", "2", "--limit", "24",
            "--json", str(out / "records.json"), "--plot", str(out / "curves.png"),
            "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads((out / "records.json").read_text()), out, result.output


def test_records_cover_every_router_task_scenario_and_seed(cold_start_run) -> None:
    records, _, _ = cold_start_run
    routers = {r["router"] for r in records}
    assert routers == {"oracle", "dataset-oracle", "best-single", "random", "cheapest"}
    tasks = {r["task"] for r in records}
    assert "mean" in tasks and len(tasks) >= 3
    assert {r["scenario"] for r in records} == {"performance-first", "balanced", "cost-first"}
    assert {r["seed"] for r in records} == {0, 1}
    for record in records:
        assert record["setting"] == "cold-start" and record["suite"] == "routerbench"
        assert 0 <= record["performance"] <= 1 and 0 <= record["cost"] <= 1
        assert record["raw_cost"] > 0
        assert sum(record["selection"].values()) == pytest.approx(1.0)
        assert len(record["curve"]) == 21
        if record["task"] != "mean":
            assert record["n_test"] + record["masked_rows"] <= 24


def test_oracle_beats_every_router(cold_start_run) -> None:
    records, _, _ = cold_start_run
    oracle = {(r["task"], r["scenario"], r["seed"]): r["utility"]
              for r in records if r["router"] == "oracle"}  # fmt: skip
    for record in records:
        key = (record["task"], record["scenario"], record["seed"])
        assert record["utility"] <= oracle[key] + 1e-9, record["router"]


def test_outputs_table_plot_and_markdown(cold_start_run, capsys) -> None:
    records, out, output = cold_start_run
    assert "routerbench · cold-start" in output and "best-single" in output
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    script = runpy.run_path(str(ROOT / "scripts" / "results_tables.py"))
    assert script["main"]([str(out / "records.json")]) == 0
    markdown = capsys.readouterr().out
    assert markdown.count("| router | utility | performance | norm. cost | gap closed |") == 3
    assert "| 1.00 ± 0.00 |" in markdown  # the oracle closes the whole gap


def test_in_domain_with_a_weight_pair(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    result = runner.invoke(
        app,
        ["eval", "--suite", "routerbench", "--setting", "in-domain", "--scenario", "0.7:-0.3",
         "--limit", "20", "--no-progress", "--first-seed", "2", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0.7:-0.3" in result.output and "random" in result.output
    assert {r["seed"] for r in json.loads(out.read_text())} == {2}  # a split run's part


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "nope"], "unknown suite"),
        (["--suite", "routerbench", "--routers", "knn,zzz"], "zzz"),
        (["--suite", "routerbench", "--scenario", "greedy"], "unknown scenario"),
        (["--suite", "routerbench", "--param", "random.seedless"], "router.key=value"),
        (["--suite", "routerbench", "--setting", "synthetic"], "--train-file"),
        (["--suite", "routerbench", "--setting", "sideways"], "sideways"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["eval", *args, "--no-progress"])
    assert result.exit_code == 2
    assert message in result.output


def write_labelled(path: Path, models: list[str], rows_per_leaf: int = 12) -> Path:
    """A small labelled JSONL in the `trouter label` format (two leaves, graded answers)."""
    lines = []
    leaves = ("Mathematics > Algebra > Easy", "Programming > Python > Hard")
    for leaf_index, leaf in enumerate(leaves):
        for i in range(rows_per_leaf):
            results = {}
            for m, model in enumerate(models):
                performance = float((i + m + leaf_index) % 3 == 0) if m else 1.0
                results[model] = {
                    "answer": f"answer {i}", "performance": performance,
                    "cost_usd": 1e-4 * (m + 1) * (1 + i % 4), "input_tokens": 40 + i,
                    "output_tokens": 20 + m, "latency_s": 0.5, "error": None,
                }  # fmt: skip
            row = {
                "id": f"{leaf_index}-{i}", "question": f"{leaf} question {i}: solve it",
                "reference": "42", "leaf_id": leaf, "generator": "test", "results": results,
            }  # fmt: skip
            lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_synthetic_setting_trains_on_labelled_file(tmp_path: Path) -> None:
    from trouter.data.suites import load_suite

    pool = load_suite("routerbench").model_names
    shared = [pool[0], pool[3], pool[5]]
    train_file = write_labelled(tmp_path / "labelled.jsonl", [*shared, "not-in-the-suite"])
    result = runner.invoke(
        app,
        ["eval", "--suite", "routerbench", "--setting", "synthetic", "--train-file",
         str(train_file), "--scenario", "balanced", "--limit", "20", "--no-progress",
         "--json", str(tmp_path / "records.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "records.json").read_text())
    assert {r["setting"] for r in records} == {"synthetic"}
    for record in records:
        assert set(record["selection"]) == set(shared)
        assert record["n_test"] + record["masked_rows"] <= 20
    oracle = next(r for r in records if r["router"] == "oracle")
    assert all(r["utility"] <= oracle["utility"] + 1e-9 for r in records)


def test_synthetic_setting_needs_two_shared_models(tmp_path: Path) -> None:
    from trouter.data.suites import load_suite

    pool = load_suite("routerbench").model_names
    train_file = write_labelled(tmp_path / "labelled.jsonl", [pool[0], "model-x", "model-y"])
    result = runner.invoke(
        app,
        ["eval", "--suite", "routerbench", "--setting", "synthetic", "--train-file",
         str(train_file), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "model-x" in result.output and pool[1] in result.output


def test_few_shot_setting_records_shots_and_draws_a_learning_curve(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["eval", "--suite", "routerbench", "--setting", "few-shot", "--shots", "0,5,all",
         "--routers", "knn", "--scenario", "balanced", "--limit", "30", "--no-progress",
         "--json", str(tmp_path / "records.json"), "--curve", str(tmp_path / "curve.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "records.json").read_text())
    assert {r["shots"] for r in records} == {0, 5, None}
    means = [r for r in records if r["task"] == "mean"]
    assert {r["shots"] for r in means} == {0, 5, None} and all(r["n_tasks"] == 3 for r in means)
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    assert "few-shot K=5" in result.output


def test_transfer_setting_tests_on_a_labelled_file(tmp_path: Path) -> None:
    from trouter.data.suites import load_suite

    pool = load_suite("routerbench").model_names
    test_file = write_labelled(tmp_path / "test.jsonl", [pool[0], pool[3], "not-in-the-suite"])
    result = runner.invoke(
        app,
        ["eval", "--suite", "routerbench", "--test-file", str(test_file), "--limit", "20",
         "--scenario", "balanced", "--no-progress", "--json", str(tmp_path / "records.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "records.json").read_text())
    assert {r["setting"] for r in records} == {"transfer"}
    assert {r["suite"] for r in records} == {"routerbench->test"}
    assert all(set(r["selection"]) == {pool[0], pool[3]} for r in records)
    bad = runner.invoke(app, ["eval", "--setting", "few-shot", "--suite", "routerbench",
                              "--shots", "x", "--no-progress"])  # fmt: skip
    assert bad.exit_code == 2 and "--shots" in bad.output
