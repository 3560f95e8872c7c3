"""The suite loaders on the committed fixtures and on the whole public files (skipped when
those are absent), and their errors on broken copies."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_full_data

from trouter.config import DataNotFoundError, MalformedDataError
from trouter.data.sources import FILES
from trouter.data.suites import SUITES, describe_suite, load_suite

csv.field_size_limit(1 << 30)


@pytest.fixture(scope="module")
def suites() -> dict:
    """Each whole suite loaded once (about 3 s for all six); skips without the full data."""
    root = require_full_data(*SUITES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TROUTER_DATA_DIR", str(root))
        return {name: load_suite(name) for name in SUITES}


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _check_common(ds, splits=("train", "validation", "test")) -> None:
    assert len(set(ds.query_ids)) == len(ds)
    assert set(ds.splits) == set(splits)
    perf = ds.performance[~np.isnan(ds.performance)]
    assert perf.min() >= 0 and perf.max() <= 1
    assert np.all(ds.cost[~np.isnan(ds.cost)] >= 0)
    assert all(isinstance(t, str) and t.strip() for t in ds.texts)


def test_routerbench_matches_the_files(suites, full_data_dir):
    ds = suites["routerbench"]
    _check_common(ds)
    assert len(ds.models) == 11
    folder = full_data_dir / "routerbench"
    for stem, bench in [
        ("arc_challenge", "arc-challenge"),
        ("mbpp", "mbpp"),
        ("winograde", "winogrande"),
    ]:
        n_train = len(_csv_rows(folder / f"{stem}_train.csv"))
        n_test = len(_csv_rows(folder / f"{stem}_test.csv"))
        mine = ds.tasks == bench
        assert (mine & (ds.splits != "test")).sum() == n_train
        assert (mine & (ds.splits == "test")).sum() == n_test
        # validation is ~15 % of each task's training rows
        assert (mine & (ds.splits == "validation")).sum() == round(0.15 * n_train)
    assert ((ds.splits != "test").sum(), (ds.splits == "test").sum()) == (2225, 953)
    # empty score cells in the CSVs are masked (NaN), never 0; all of them are ARC rows
    empty = sum(
        row[m] == ""
        for s in ("train", "test")
        for row in _csv_rows(folder / f"arc_challenge_{s}.csv")
        for m in ds.model_names
    )
    assert ds.masked_cells == empty == 154
    assert set(ds.tasks[~ds.complete_rows]) == {"arc-challenge"}
    assert np.all(ds.cost > 0)  # real USD per call, every cost cell present


def test_routerbench_text_is_the_question_not_the_shared_exemplars(suites):
    ds = suites["routerbench"]
    for bench in ("arc-challenge", "winogrande"):
        texts = [t for t, b in zip(ds.texts, ds.benchmarks, strict=True) if b == bench]
        assert all(t.count("Answer:") == 1 for t in texts)  # the five exemplars are gone
        assert len(set(texts)) > 0.95 * len(texts)


def test_llmrouter_scores_tasks_and_estimated_cost(suites, full_data_dir):
    ds = suites["llmrouter"]
    _check_common(ds)
    folder = full_data_dir / "llmrouter"
    prices = json.loads((folder / "default_llm.json").read_text())
    assert len(ds.models) == 9
    for model in ds.models:
        assert model.input_price_per_mtok == prices[model.name]["input_price"]
        assert model.output_price_per_mtok == prices[model.name]["output_price"]
    assert (ds.splits != "test").sum() == 5608 and (ds.splits == "test").sum() == 500
    assert len(set(ds.tasks)) == 14
    test_tasks = Counter(ds.tasks[ds.splits == "test"])
    assert set(test_tasks.values()) == {50} and len(test_tasks) == 10
    assert ds.masked_cells == 0
    # within a query, estimated cost is proportional to the model's input price
    assert np.all(ds.cost > 0)
    ratio = ds.cost / np.array([m.input_price_per_mtok for m in ds.models])
    assert np.allclose(ratio, ratio[:, :1])
    assert "estimated" in ds.cost_source and "input" in ds.cost_source
    # performance is the release's own score for that question and model
    first = json.loads((folder / "dcrouter_test.json").read_text())[0]
    row = list(ds.texts).index(first["question"])
    assert ds.performance[row].tolist() == [first["scores"][m] for m in ds.model_names]


def test_routerdc_in_and_out_of_distribution(suites, full_data_dir):
    ds = suites["routerdc"]
    _check_common(ds)
    assert len(ds.models) == 7
    folder = full_data_dir / "routerdc_split2"
    for task in ("MATH_prealgebra", "mbpp", "ceval", "javascript"):
        rows = ds.tasks == task
        assert set(ds.splits[rows]) == {"test"}
        assert rows.sum() == len(json.loads((folder / f"{task}.json").read_text()))
    n_train = sum(
        len(json.loads((folder / name).read_text()))
        for name in (
            "mmlu_train.json",
            "gsm8k-train.json",
            "cmmlu_train.json",
            "arc_challenge_train.json",
            "humaneval_train.json",
        )
    )
    assert (ds.splits != "test").sum() == n_train == 5935
    assert (ds.splits == "test").sum() == 12289
    assert "arc_easy" not in set(ds.tasks)
    assert ds.cost_source == "none" and not ds.cost.any()


def test_routellm_gsm8k_fixed_split_and_token_cost(suites, full_data_dir):
    ds = suites["routellm-gsm8k"]
    _check_common(ds)
    rows = _csv_rows(full_data_dir / "routellm" / "gsm8k_responses.csv")
    assert len(ds) == len(rows) == 1319
    assert (ds.splits == "test").sum() == round(0.3 * 1319)
    strong, weak = ds.model_names
    assert strong == "gpt-4-1106-preview" and "Mixtral" in weak
    assert np.nanmean(ds.performance[:, 0]) == pytest.approx(
        sum(r[strong] == "True" for r in rows) / len(rows)
    )
    assert ds.models[0].input_price_per_mtok == 10 and ds.models[0].output_price_per_mtok == 30
    assert np.all(ds.cost[:, 0] > ds.cost[:, 1]) and np.all(ds.cost > 0)
    # the test split does not move with the run seed; validation does
    other = load_suite("routellm-gsm8k", seed=1)
    assert list(other.query_ids[other.splits == "test"]) == list(ds.query_ids[ds.splits == "test"])
    assert list(other.splits) != list(ds.splits)


def test_routellm_mmlu_and_mtbench(suites, full_data_dir):
    mmlu = suites["routellm-mmlu"]
    _check_common(mmlu)
    assert len(mmlu) == 14042 and len(set(mmlu.tasks)) == 57
    assert set(mmlu.benchmarks) == {"mmlu"}
    assert "input only" in mmlu.cost_source

    mt = suites["routellm-mtbench"]
    _check_common(mt)
    assert len(mt) == 80 and len(set(mt.tasks)) == 8
    judgements = [
        json.loads(line)
        for line in (full_data_dir / "routellm" / "mt_bench_judgements.jsonl").open()
    ]
    qid = int(mt.query_ids[0].rsplit("/", 1)[1])
    for col, model in enumerate(mt.model_names):
        turns = [j["score"] for j in judgements if j["question_id"] == qid and j["model"] == model]
        assert len(turns) == 2
        assert mt.performance[0, col] == pytest.approx(np.mean(turns) / 10)
    assert np.all(mt.cost[:, 0] > mt.cost[:, 1])


def test_describe_suite_summary(suites, full_data_dir):
    summary = describe_suite("routerbench")
    assert summary["splits"] == {
        s: int((suites["routerbench"].splits == s).sum()) for s in ("train", "validation", "test")
    }
    assert summary["masked_cells"] == 154 and summary["models"] == 11
    assert summary["total_cost_usd"] > 0 and summary["cost_source"]
    with pytest.raises(KeyError, match="unknown suite"):
        load_suite("no-such-suite")


def _rows_in(path: Path) -> int:
    if path.suffix == ".csv":
        return len(_csv_rows(path))
    if path.suffix == ".json":
        return len(json.loads(path.read_text()))
    return sum(1 for line in path.open() if line.strip())


@pytest.mark.parametrize("name", list(SUITES))
def test_every_suite_loads_from_the_fixtures(name, data_dir):
    """The committed cuts have the releases' schema: the real loaders read them, and every
    row of the files becomes one query."""
    ds = load_suite(name)
    # two MT-Bench questions per category: one train, one test, none left for validation
    tiny = name == "routellm-mtbench"
    _check_common(ds, ("train", "test") if tiny else ("train", "validation", "test"))
    folder = {
        "routerbench": "routerbench/",
        "llmrouter": "llmrouter/dcrouter_",
        "routerdc": "routerdc_split2/",
        "routellm-gsm8k": "routellm/gsm8k",
        "routellm-mmlu": "routellm/mmlu/",
        "routellm-mtbench": "routellm/mt_bench_q",
    }[name]
    skipped = ("arc_easy",)  # in the folder, not read (see the routerdc loader)
    rows = sum(
        _rows_in(data_dir / f.path)
        for f in FILES
        if f.path.startswith(folder) and not any(s in f.path for s in skipped)
    )
    assert len(ds) == rows >= (16 if tiny else 100)


def test_fixtures_are_small_and_have_provenance(data_dir):
    total = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert total <= 3_000_000
    provenance = (data_dir / "PROVENANCE.md").read_text()
    shipped = {"questions/HumanEval.jsonl.gz"}  # whole in the package, not cut as a fixture
    assert all(f"`{f.path}`" in provenance for f in FILES if f.path not in shipped)
    assert all((data_dir / f.path).is_file() for f in FILES if f.path not in shipped)
    assert not any((data_dir / path).exists() for path in shipped)


# ----- broken copies -------------------------------------------------------------------
def _routerbench_slice(data_dir: Path, tmp_path: Path, monkeypatch) -> Path:
    """A small copy of routerbench/ (20 rows per file) under a tmp data folder."""
    folder = tmp_path / "routerbench"
    folder.mkdir()
    for path in (data_dir / "routerbench").glob("*.csv"):
        pd.read_csv(path, dtype=str, keep_default_na=False, nrows=20).to_csv(
            folder / path.name, index=False
        )
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path))
    return folder


def test_empty_cell_is_masked_not_zero(data_dir, tmp_path, monkeypatch):
    folder = _routerbench_slice(data_dir, tmp_path, monkeypatch)
    path = folder / "mbpp_train.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[3, "claude-v2"] = ""
    frame.to_csv(path, index=False)
    ds = load_suite("routerbench")
    assert len(ds) == 120
    row = np.flatnonzero(ds.tasks == "mbpp")[3]
    assert np.isnan(ds.performance[row, ds.model_names.index("claude-v2")])
    assert ds.masked_cells == int(np.isnan(ds.performance).sum()) >= 1


@pytest.mark.parametrize(("value", "message"), [("1.5", "outside"), ("yes", "unparseable")])
def test_bad_score_names_file_and_column(data_dir, tmp_path, monkeypatch, value, message):
    folder = _routerbench_slice(data_dir, tmp_path, monkeypatch)
    path = folder / "winograde_test.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[0, "claude-v1"] = value
    frame.to_csv(path, index=False)
    with pytest.raises(MalformedDataError, match=message) as err:
        load_suite("routerbench")
    assert "winograde_test.csv" in str(err.value) and "claude-v1" in str(err.value)


def test_missing_column_and_bad_csv(data_dir, tmp_path, monkeypatch):
    folder = _routerbench_slice(data_dir, tmp_path, monkeypatch)
    path = folder / "mbpp_test.csv"
    pd.read_csv(path, dtype=str).drop(columns=["eval_name"]).to_csv(path, index=False)
    with pytest.raises(MalformedDataError, match="mbpp_test.csv.*eval_name"):
        load_suite("routerbench")
    path.write_text('sample_id,prompt,eval_name\n"a,"b\nc,"d,e,f,g\n')
    with pytest.raises(MalformedDataError, match="mbpp_test.csv"):
        load_suite("routerbench")


def test_bad_json_names_the_file(data_dir, tmp_path, monkeypatch):
    folder = tmp_path / "routerdc_split2"
    shutil.copytree(data_dir / "routerdc_split2", folder)
    (folder / "mbpp.json").write_text('[{"question": "q", "scores": ')
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path))
    with pytest.raises(MalformedDataError, match=r"mbpp\.json.*not valid JSON"):
        load_suite("routerdc")
    (folder / "mbpp.json").write_text('[{"question": "q", "scores": {"a": 2}}]')
    with pytest.raises(MalformedDataError, match=r"mbpp\.json"):
        load_suite("routerdc")


def test_missing_folder_and_file(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="llmrouter"):
        load_suite("llmrouter")
    folder = tmp_path / "llmrouter"
    folder.mkdir()
    for path in (data_dir / "llmrouter").iterdir():
        if path.name != "default_query_test.jsonl":
            (folder / path.name).symlink_to(path)
    with pytest.raises(DataNotFoundError, match="default_query_test.jsonl"):
        load_suite("llmrouter")
