"""The local-pool benchmark pipeline: gradable synthesis, programmatic grading, filters, export.

Everything runs through the real LLM client against the loopback stand-in: the generator
replies with JSON items (one code item deliberately has a reference that fails its own
tests), and two pool models answer -- "strong" correctly, "weak" wrongly on numbers --
so the grades, the filter flags and the resumable files can be checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
from standin import standin  # noqa: F401

from trouter.data.labelled import read_labelled
from trouter.data.output_lock import OutputLockedError, exclusive_output
from trouter.labelling.graders import extract_choice, grade_choice, grade_code, grade_number
from trouter.llm import LLMClient
from trouter.llm.pool import Pool
from trouter.local.benchmark import labelled_rows
from trouter.local.synthetic import build_synthetic, release_leaf_ids
from trouter.synthesis.graded import parse_items
from trouter.taxonomy.model import Taxonomy

GOOD_CODE = {
    "question": "Write add(a, b) returning the sum of two integers.",
    "function_name": "add",
    "solution": "def add(a, b):\n    return a + b\n",
    "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"],
}
BAD_CODE = {**GOOD_CODE, "question": "Write add(a, b), buggy reference.",
            "solution": "def add(a, b):\n    return a - b\n"}  # fmt: skip


def test_graders_score_answers_mechanically():
    assert grade_number("so 6 * 7 = 42\n#### 42", "42") == 1.0
    assert grade_number("The total is 1,250 dollars.", "1250") == 1.0
    assert grade_number("#### 41", "42") == 0.0
    assert grade_number("no number here", "42") == 0.0
    assert extract_choice("Water boils at 100 C.\nAnswer: B") == "B"
    assert grade_choice("The answer is (c).", "C") == 1.0
    assert grade_choice("Answer: A", "D") == 0.0
    answer = "```python\ndef add(a, b):\n    return a + b\n```"
    assert grade_code(answer, "assert add(2, 2) == 4") == 1.0
    assert grade_code(answer.replace("+", "*"), "assert add(2, 3) == 5") == 0.0
    assert grade_code("while True: pass", "assert True", timeout_s=2) == 0.0


def test_parse_items_keeps_only_checkable_items():
    code = parse_items({"items": [GOOD_CODE, BAD_CODE, {"question": "x"}]}, "code")
    assert [c["question"] for c in code] == [GOOD_CODE["question"]]
    assert code[0]["extra"]["tests"].count("assert") == 3
    numbers = parse_items({"items": [{"question": "2+2?", "solution": "", "answer": "4"},
                                     {"question": "2+?", "solution": "", "answer": "four"}]},
                          "number")  # fmt: skip
    assert [n["reference"] for n in numbers] == ["4"]
    choices = parse_items(
        {"items": [{"question": "Q", "options": ["a", "b", "c", "d"], "answer": "c"},
                   {"question": "Q3", "options": ["a", "b", "c"], "answer": "A"}]}, "choice"
    )  # fmt: skip
    assert [c["reference"] for c in choices] == ["C"]
    with pytest.raises(ValueError):
        parse_items({"nothing": 1}, "number")


def test_release_has_at_least_20_leaves_over_math_code_and_more():
    leaves = release_leaf_ids(Taxonomy.default())
    assert len(leaves) >= 20
    domains = {leaf.split(" > ")[0] for leaf in leaves}
    assert {"Mathematics", "Programming"} < domains and len(domains) >= 3


def test_release_leaves_can_be_limited_to_answer_formats():
    every = release_leaf_ids(Taxonomy.default())
    choice = release_leaf_ids(Taxonomy.default(), ["choice"])
    code_and_number = release_leaf_ids(Taxonomy.default(), ["code", "number"])
    assert choice and code_and_number and not set(choice) & set(code_and_number)
    assert sorted(choice + code_and_number) == sorted(every)
    assert all(
        leaf.startswith("Programming") for leaf in release_leaf_ids(Taxonomy.default(), ["code"])
    )
    with pytest.raises(ValueError, match="unknown answer format 'essay'"):
        release_leaf_ids(Taxonomy.default(), ["essay"])


LEAVES = release_leaf_ids(Taxonomy.default())
WORDS = ["apples", "trains", "rivers", "violins", "tigers", "planets", "bakers", "lamps"]


def _responder(messages, model):
    user = messages[-1]["content"]
    if messages[0]["role"] == "system" and "Batch" in user:  # a generation request
        batch = int(re.search(r"Batch (\d+)", user).group(1))
        topic = re.search(r"Subcategory: ([^-]+)", user).group(1).strip()
        if "Python function task" in user:
            items = [
                {**GOOD_CODE, "question": f"{WORDS[batch % 8]} {topic}: add two numbers"},
                BAD_CODE,
            ]
        elif "four options" in user:
            items = [{"question": f"Among {WORDS[batch % 8]} ({topic}), which is a fruit?",
                      "options": ["stone", "apple", "iron", "glass"], "answer": "B"}]  # fmt: skip
        else:
            question = f"{WORDS[batch % 8]} count for {topic}: what is {batch} + 40?"
            items = [{"question": question, "solution": "", "answer": str(batch + 40)}]
        return json.dumps({"items": items})
    if "#### <number>" in user:
        total = int(re.search(r"what is (\d+) \+ 40", user).group(1)) + 40
        return f"#### {total if model == 'strong' else total + 1}"
    if "Answer: <letter>" in user:
        return "Answer: B"
    return "```python\ndef add(a, b):\n    return a + b\n```"


def test_build_synthetic_grades_filters_and_resumes(standin, tmp_path):  # noqa: F811
    standin.responder = _responder
    pool = Pool.from_dict(
        {
            "models": [
                {
                    "name": n,
                    "litellm_model": f"openai/{n}",
                    "api_base": standin.base_url,
                    "input_price_per_mtok": p,
                    "output_price_per_mtok": p,
                }
                for n, p in (("strong", 1.0), ("weak", 0.1))
            ]
        }  # fmt: skip
    )
    client = LLMClient(cache_dir=tmp_path / "cache")
    leaves = [LEAVES[0], LEAVES[9], LEAVES[-1]]  # one number, one code, one choice leaf
    counts = asyncio.run(
        build_synthetic(client, pool, "strong", Taxonomy.default(), tmp_path, per_leaf=4,
                        announce=lambda _t: None, leaf_ids=leaves)
    )  # fmt: skip
    rows = read_labelled(tmp_path / "synthetic.jsonl")
    assert counts["questions"] == len(rows) > 0
    assert not any("buggy" in r["question"] for r in rows)  # failed its own tests: dropped
    by_format = {r["format"]: r for r in rows}
    assert set(by_format) == {"number", "code", "choice"}
    number = by_format["number"]["results"]
    assert number["strong"]["performance"] == 1.0 and number["weak"]["performance"] == 0.0
    assert by_format["number"]["discriminative"] and by_format["number"]["self_consistent"]
    assert not by_format["choice"]["discriminative"]  # both models right
    assert all(r["results"]["weak"]["cost_usd"] < r["results"]["strong"]["cost_usd"] for r in rows)
    asyncio.run(
        build_synthetic(client, pool, "strong", Taxonomy.default(), tmp_path, per_leaf=4,
                        announce=lambda _t: None, leaf_ids=leaves)
    )  # fmt: skip
    answered = [(r["model"], r["body"]["messages"][-1]["content"]) for r in standin.requests
                if "Batch" not in r["body"]["messages"][-1]["content"]]  # fmt: skip
    assert len(answered) == len(set(answered))  # a rerun resumes: no question answered twice
    assert len(read_labelled(tmp_path / "synthetic.jsonl")) >= len(rows)


def test_labelled_rows_skip_questions_not_answered_by_every_model():
    from trouter.evaluation.real_questions import RealQuestion

    questions = [
        RealQuestion("q1", "gsm8k", "p1", "1", {}),
        RealQuestion("q2", "gsm8k", "p2", "2", {}),
    ]
    answers = [
        {"id": "q1", "model": "a", "performance": 1.0, "cost_usd": 0.1},
        {"id": "q1", "model": "b", "performance": None, "cost_usd": None, "error": "timeout"},
        {"id": "q2", "model": "a", "performance": 0.0, "cost_usd": 0.1},
    ]
    rows = labelled_rows(questions, answers, ["a", "b"])
    assert [r["id"] for r in rows] == ["q1"]
    assert rows[0]["results"]["b"]["error"] == "timeout" and rows[0]["benchmark"] == "gsm8k"


def test_failed_calls_are_asked_again_on_resume(standin, tmp_path):  # noqa: F811
    from trouter.evaluation.real_questions import RealQuestion
    from trouter.local.real_answers import answer_real_questions

    standin.responder = lambda messages, model: "#### 4"
    pool = Pool.from_dict(
        {
            "models": [
                {
                    "name": "m",
                    "litellm_model": "openai/m",
                    "api_base": standin.base_url,
                    "input_price_per_mtok": 1.0,
                    "output_price_per_mtok": 1.0,
                }
            ]
        }  # fmt: skip
    )
    client = LLMClient(cache_dir=tmp_path / "cache", max_retries=1, backoff_base_s=0.01)
    questions = [RealQuestion(f"q{i}", "synthetic", f"What is 2 + 2? ({i})", "4",
                              {"format": "number"}) for i in range(2)]  # fmt: skip
    out = tmp_path / "answers.jsonl"
    standin.fail_next(2, status=503)  # the first question's call and its one retry
    first = asyncio.run(answer_real_questions(client, pool, questions, out))
    assert [r["performance"] for r in first] == [None, 1.0]
    second = asyncio.run(answer_real_questions(client, pool, questions, out))
    assert [r["performance"] for r in second] == [1.0, 1.0]
    assert len(out.read_text().splitlines()) == 3  # the failure stays on record, superseded

    # a second writer on the same file (here another thread holds it) stops before any call
    held, release = threading.Event(), threading.Event()

    def other_run() -> None:
        with exclusive_output(out):
            held.set()
            release.wait(30)

    writer = threading.Thread(target=other_run)
    writer.start()
    assert held.wait(30)
    calls, more = (
        standin.total_calls,
        [*questions, RealQuestion("q9", "synthetic", "1 + 1?", "2", {"format": "number"})],
    )
    try:
        with pytest.raises(OutputLockedError, match="being written by another trouter run"):
            asyncio.run(answer_real_questions(client, pool, more, out))
    finally:
        release.set()
        writer.join()
    assert standin.total_calls == calls and len(out.read_text().splitlines()) == 3


def test_a_killed_runs_torn_line_is_cut_before_resuming(standin, tmp_path):  # noqa: F811
    from trouter.config import MalformedDataError
    from trouter.evaluation.real_questions import RealQuestion
    from trouter.local.real_answers import answer_real_questions, read_answer_rows

    standin.responder = lambda messages, model: "#### 4"
    pool = Pool.from_dict({"models": [{"name": "m", "litellm_model": "openai/m",
                                       "api_base": standin.base_url}]})  # fmt: skip
    client = LLMClient(cache_dir=tmp_path / "cache", max_retries=0)
    questions = [RealQuestion(f"q{i}", "synthetic", f"2 + 2? ({i})", "4", {"format": "number"})
                 for i in range(2)]  # fmt: skip
    out = tmp_path / "answers.jsonl"
    asyncio.run(answer_real_questions(client, pool, questions[:1], out))
    with out.open("a") as handle:  # a run killed in the middle of its next write
        handle.write('{"id": "q1", "model": "m", "perf')
    assert [r["id"] for r in read_answer_rows(out)] == ["q0"]  # readers skip the torn line
    asyncio.run(answer_real_questions(client, pool, questions, out))
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["q0", "q1"]

    # damage anywhere but the end is not a crash artefact: it is named, never skipped
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0][:-3], lines[1]]) + "\n")
    with pytest.raises(MalformedDataError, match=r"answers\.jsonl:1: not valid JSON"):
        read_answer_rows(out)


def _release(tmp_path, n_syn=40, n_real=60):
    """A small release in the real file format, with scores a router can learn: the strong
    model is right on questions about trains, the weak one only on questions about apples."""
    from trouter.local.benchmark import write_labelled

    def row(i, kind, leaf, benchmark):
        topic = WORDS[i % 2]  # apples / trains
        scores = {"strong": 1.0 if topic == "trains" or i % 3 else 0.0,
                  "weak": 1.0 if topic == "apples" else 0.0}  # fmt: skip
        return {
            "id": f"{kind}-{i}", "question": f"How many {topic} are in set {i}?",
            "reference": "1", "leaf_id": leaf, "generator": "strong", "benchmark": benchmark,
            "self_consistent": scores["strong"] == 1.0,
            "discriminative": len(set(scores.values())) > 1,
            "results": {m: {"performance": s, "cost_usd": 1e-4 if m == "strong" else 1e-5}
                        for m, s in scores.items()},
        }  # fmt: skip

    leaves = LEAVES[:3]
    write_labelled([row(i, "syn", leaves[i % 3], "synthetic") for i in range(n_syn)],
                   tmp_path / "synthetic.jsonl")  # fmt: skip
    write_labelled([row(i, "real", "", ("gsm8k", "humaneval")[i % 2]) for i in range(n_real)],
                   tmp_path / "real.jsonl")  # fmt: skip


def test_local_pool_folds_never_train_on_the_real_test_half(tmp_path):
    from trouter.local.pool_eval import load_release, local_pool_folds

    _release(tmp_path)
    dataset, is_synthetic, filtered = load_release(tmp_path)
    assert (dataset.splits == "test").sum() == 30 and 0 < filtered.sum() < is_synthetic.sum()
    test_ids = set(dataset.split("test").query_ids)
    folds = local_pool_folds(dataset, is_synthetic, filtered, seed=1, shots=(0, 10, 25))
    assert [s for s, _ in folds] == ["synthetic", "synthetic-filtered", "few-shot", "few-shot",
                                     "in-domain"]  # fmt: skip
    few = [f for s, f in folds if s == "few-shot"]
    real_ids = [
        {i for i in f.train.query_ids if i.startswith("real")}
        | {i for i in f.validation.query_ids if i.startswith("real")}
        for f in few
    ]
    assert [len(r) for r in real_ids] == [10, 25] and real_ids[0] < real_ids[1]  # nested shots
    for _setting, fold in folds:
        seen = set(fold.train.query_ids) | set(fold.validation.query_ids)
        assert not seen & test_ids
        assert set(fold.test.query_ids) == test_ids


def test_local_pool_eval_command_writes_records(tmp_path):
    from typer.testing import CliRunner

    from trouter.cli import app

    _release(tmp_path)
    result = CliRunner().invoke(app, ["experiment", "local-pool", "eval", "--out", str(tmp_path),
                                      "--seeds", "1", "--routers", "knn,cluster",
                                      "--shots", "10"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    settings = {r["setting"] for r in records}
    assert settings == {"synthetic", "synthetic-filtered", "few-shot", "in-domain"}
    routers = {r["router"] for r in records if r["setting"] == "synthetic"}
    assert {"oracle", "best-single", "random", "cheapest", "cluster", "knn"} <= routers
    oracle = [r["utility"] for r in records if r["router"] == "oracle"]
    assert all(r["utility"] <= max(oracle) + 1e-9 for r in records)
    # the task ceiling: per benchmark, the better model in hindsight. It is never above oracle
    # nor below a fixed choice; here each benchmark is one topic with its own better model
    # in performance-first (weak on apples, strong on trains): strictly above best-single
    by = {(r["router"], r["scenario"], r["setting"]): r["utility"] for r in records}
    for scenario in ("performance-first", "balanced", "cost-first"):
        ceiling = by["dataset-oracle", scenario, "synthetic"]
        assert by["oracle", scenario, "synthetic"] + 1e-9 >= ceiling
        assert ceiling + 1e-9 >= max(by["best-single", scenario, "synthetic"],
                                     by["cheapest", scenario, "synthetic"])  # fmt: skip
    first = "performance-first"
    assert by["dataset-oracle", first, "synthetic"] > by["best-single", first, "synthetic"] + 0.1
    table = (tmp_path / "table.md").read_text()  # every setting is in the printed table
    for heading in ("local-pool · synthetic**", "local-pool · synthetic-filtered**",
                    "local-pool · few-shot K=10**", "local-pool · in-domain**"):  # fmt: skip
        assert heading in table, table
    assert "| knn |" in table and "| best-single |" in table


def test_eval_of_an_unfinished_release_exits_2_with_the_counts(tmp_path):
    from typer.testing import CliRunner

    from trouter.cli import app

    _release(tmp_path, n_syn=40, n_real=60)
    (tmp_path / "synthetic.jsonl").write_text("")  # generated, not yet answered
    result = CliRunner().invoke(app, ["experiment", "local-pool", "eval", "--out", str(tmp_path)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "0 complete synthetic and 60 complete real rows" in text
    assert "Traceback" not in result.output


def test_real_rows_are_one_task_the_routed_application(tmp_path):
    from trouter.local.pool_eval import REAL_TASK, load_release

    _release(tmp_path)
    dataset, is_synthetic, _ = load_release(tmp_path)
    assert set(dataset.tasks[~is_synthetic]) == {REAL_TASK}
    assert REAL_TASK not in set(dataset.tasks[is_synthetic])
    assert set(dataset.benchmarks[~is_synthetic]) == {"gsm8k", "humaneval"}  # cost groups kept


def test_real_choice_sets_are_read_from_llmrouter_rows_and_graded_by_letter(data_dir):
    # the fixture cut of LLMRouter's query files: 8 + 23 MMLU rows (test file, then train)
    from trouter.evaluation.real_questions import grade, load_choice_set

    raw = [
        json.loads(line)
        for name in ("default_query_test.jsonl", "default_query_train.jsonl")
        for line in (data_dir / "llmrouter" / name).read_text(encoding="utf-8").splitlines()
    ]
    mmlu = [row for row in raw if row["task_name"] == "mmlu"]
    questions = load_choice_set("mmlu")
    assert len(questions) == len(mmlu) > 20  # every fixture MMLU row has four options
    first, last = questions[0], questions[-1]
    assert first.id.startswith("mmlu-test-") and last.id.startswith("mmlu-train-")
    assert first.reference == mmlu[0]["ground_truth"]
    assert first.prompt.startswith(mmlu[0]["query"].strip())
    assert "\nA. " in first.prompt and "\nD. " in first.prompt
    assert "Answer: <letter>" in first.prompt
    wrong = next(letter for letter in "ABCD" if letter != first.reference)
    assert grade(first, f"Answer: {first.reference}") == 1.0
    assert grade(first, f"Answer: {wrong}") == 0.0
    assert [q.id for q in load_choice_set("mmlu", limit=3)] == [q.id for q in questions[:3]]
    with pytest.raises(ValueError, match="unknown choice set"):
        load_choice_set("commonsense_qa")  # five options: not gradable as A-D


def test_choice_sets_come_after_the_first_real_questions_alternated():
    from trouter.local.benchmark import interleaved_real_questions

    questions = interleaved_real_questions(2, 2, 3)
    assert [q.benchmark for q in questions] == ["gsm8k", "humaneval"] * 2 + [
        "mmlu", "openbook_qa"] * 3  # fmt: skip
    assert questions[:4] == interleaved_real_questions(2, 2)  # the first rows keep their place


def test_choice_sets_without_the_llmrouter_data_name_the_fetch_command(tmp_path, monkeypatch):
    from trouter.config import DataNotFoundError
    from trouter.local.benchmark import export_real, interleaved_real_questions

    monkeypatch.setenv("TROUTER_DATA_DIR", str(tmp_path / "none"))
    with pytest.raises(DataNotFoundError, match="trouter data fetch llmrouter"):
        interleaved_real_questions(1, 1, 1)
    # GSM8K / HumanEval alone need no data folder; nothing answered exports no rows
    counts = export_real(tmp_path, 2, 2, 0)
    assert counts["complete_rows"] == 0 and (tmp_path / "real.jsonl").read_text() == ""
