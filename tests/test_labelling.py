"""`trouter label` on real GSM8K questions against the stand-in server, through real LiteLLM.

The stand-in plays three models: "strong" answers every question with the reference's final
number, "weak" only the even-numbered ones, and the judge compares the candidate's last number
with the reference -- so every expected label follows from the real data, not from a table.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from standin import StandIn
from typer.testing import CliRunner

from trouter.cli import app
from trouter.config import MalformedDataError
from trouter.data.labelled import load_labelled, read_labelled
from trouter.labelling.judge import JUDGE_SYSTEM, VerdictError, parse_verdict

N_QUESTIONS = 10
PRICES = {"strong": (3.0, 15.0), "weak": (0.2, 0.6), "judge": (1.0, 2.0)}
ROOT = Path(__file__).resolve().parents[1]


def gsm8k_rows(data_dir: Path, n: int) -> list[dict[str, str]]:
    rows = []
    with (data_dir / "questions" / "gsm8k_train.jsonl").open() as handle:
        for i, line in enumerate(handle):
            if i == n:
                break
            item = json.loads(line)
            level = "Easy" if i % 2 == 0 else "Hard"
            rows.append(
                {
                    "id": f"gsm8k-train-{i}",
                    "question": item["question"],
                    "reference": item["answer"].split("####")[-1].strip(),
                    "leaf_id": f"Mathematics > Arithmetic Word Problems > {level}",
                    "generator": "gsm8k",
                }
            )
    return rows


def last_number(text: str) -> str | None:
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return numbers[-1].replace(",", "") if numbers else None


class World:
    """Responder for the three stand-in models, keyed by the real questions."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.reference = {r["question"]: r["reference"] for r in rows}
        self.index = {r["question"]: i for i, r in enumerate(rows)}
        self.garbage_for: set[str] = set()  # questions whose verdict is unreadable

    def weak_is_right(self, question: str) -> bool:
        return self.index[question] % 2 == 0

    def __call__(self, messages: list[dict], model: str) -> str:
        if messages[0]["content"] == JUDGE_SYSTEM:
            prompt = messages[1]["content"]
            question = prompt.split("Question:\n", 1)[1].split("\n\nReference answer:")[0]
            reference = prompt.split("Reference answer:\n", 1)[1].split("\n\nCandidate")[0]
            answer = prompt.split("Candidate answer:\n", 1)[1].split("\n\nReply with")[0]
            if question in self.garbage_for:
                return "The candidate seems fine overall, I suppose."
            score = 1 if last_number(answer) == reference.replace(",", "") else 0
            return json.dumps({"score": score})
        question = messages[-1]["content"]
        right = self.reference[question]
        if model == "strong" or (model == "weak" and self.weak_is_right(question)):
            return f"Working it through step by step, the answer is {right}"
        return f"I believe the answer is {int(right.replace(',', '')) + 3}"


def calls_to_label(indices) -> int:
    """Server calls to label these questions: two answers, one verdict per distinct answer
    (where weak is right it gives strong's answer word for word, and they share a verdict)."""
    return sum(2 + (1 if i % 2 == 0 else 2) for i in indices)


def judge_calls(n: int) -> int:
    return calls_to_label(range(n)) - 2 * n


def write_pool(path: Path, server: StandIn) -> Path:
    lines = ["models:"]
    for name, (p_in, p_out) in PRICES.items():
        lines += [
            f"  - name: {name}",
            f"    litellm_model: openai/{name}",
            f"    api_base: {server.base_url}",
            f"    input_price_per_mtok: {p_in}",
            f"    output_price_per_mtok: {p_out}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def setup(tmp_path, data_dir, monkeypatch):
    """(server, world, questions file, pool file, out path) with a private LLM cache."""
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache"))
    rows = gsm8k_rows(data_dir, N_QUESTIONS)
    world = World(rows)
    server = StandIn(models=list(PRICES), responder=world).start()
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = write_pool(tmp_path / "pool.yaml", server)
    yield server, world, questions, pool, tmp_path / "labelled.jsonl"
    server.stop()


def label_args(questions: Path, pool: Path, out: Path, *extra: str) -> list[str]:
    return [
        "label",
        "--questions",
        str(questions),
        "--pool",
        str(pool),
        "--judge",
        "judge",
        "--models",
        "strong,weak",
        "--out",
        str(out),
        "--max-retries",
        "1",
        "--timeout",
        "30",
        *extra,
    ]


def run_label(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 1}', 1.0),
        ('{"score": 0.5}', 0.5),
        ('```json\n{"score": 0}\n```', 0.0),
        ("Verdict: 0.5", 0.5),
        ("1", 1.0),
        ("0.", 0.0),
        ("The answer matches the reference. Score: 1.0", 1.0),
        ('I compared them. {"score": "0.5"}', 0.5),
    ],
)
def test_judge_verdicts_parse(reply, score):
    assert parse_verdict(reply) == score


@pytest.mark.parametrize(
    "reply",
    ["", "looks right to me", '{"score": 0.7}', "Score: 0.7", "score 1, or maybe score 0", "2"],
)
def test_unreadable_verdicts_are_errors_not_zero(reply):
    with pytest.raises(VerdictError):
        parse_verdict(reply)


def test_label_end_to_end(setup):
    server, world, questions, pool, out = setup
    result = run_label(*label_args(questions, pool, out))
    assert result.exit_code == 0, result.output
    rows = read_labelled(out)
    assert len(rows) == N_QUESTIONS
    # every model answered every question, and the judge saw every distinct answer, once each
    expected_calls = {"strong": N_QUESTIONS, "weak": N_QUESTIONS, "judge": judge_calls(N_QUESTIONS)}
    assert server.calls == expected_calls, result.output
    for row in rows:
        strong, weak = row["results"]["strong"], row["results"]["weak"]
        assert strong["performance"] == 1.0
        assert weak["performance"] == (1.0 if world.weak_is_right(row["question"]) else 0.0)
        p_in, p_out = PRICES["strong"]
        expected = (strong["input_tokens"] * p_in + strong["output_tokens"] * p_out) / 1e6
        assert strong["cost_usd"] == pytest.approx(expected)
        assert strong["latency_s"] > 0 and strong["error"] is None
    data = load_labelled(out, validation_fraction=0.25, seed=0)
    assert data.model_names == ["strong", "weak"]
    assert set(data.tasks) == {"Mathematics"} and set(data.benchmarks) == {"synthetic"}
    assert set(data.splits) == {"train", "validation"}
    for leaf in set(data.leaf_ids):  # validation is carved inside each leaf
        in_leaf = data.splits[data.leaf_ids == leaf]
        assert (in_leaf == "validation").sum() == round(len(in_leaf) * 0.25)
    assert np.nanmean(data.performance[:, 0]) == 1.0
    assert np.nanmean(data.performance[:, 1]) == pytest.approx(0.5)
    # a rerun finds everything done: no calls, no new lines
    server.reset()
    again = run_label(*label_args(questions, pool, out))
    assert again.exit_code == 0 and server.total_calls == 0
    assert len(read_labelled(out)) == N_QUESTIONS


def test_failures_are_masked_never_zero(setup):
    server, world, questions, pool, out = setup
    world.garbage_for.add(world_question(world, 3))
    server.fail_next(2, status=400, model="weak")  # the first two weak answers fail for good
    result = run_label(*label_args(questions, pool, out, "--concurrency", "1"))
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in read_labelled(out)}
    failed = [
        r for r in rows.values() if (r["results"]["weak"]["error"] or "").startswith("answer")
    ]
    assert len(failed) == 2
    for row in failed:
        cell = row["results"]["weak"]
        assert cell["performance"] is None and cell["answer"] is None and "400" in cell["error"]
    garbled = rows["gsm8k-train-3"]["results"]
    assert all(c["performance"] is None for c in garbled.values())
    assert all("no score" in c["error"] for c in garbled.values())
    assert garbled["strong"]["answer"].endswith(world.reference[world_question(world, 3)])
    data = load_labelled(out)
    assert data.masked_cells == 2 + 2  # NaN, not 0
    assert np.isnan(data.performance[list(data.query_ids).index("gsm8k-train-3")]).all()


def world_question(world: World, index: int) -> str:
    return next(q for q, i in world.index.items() if i == index)


def test_resume_after_kill_loses_and_duplicates_nothing(setup):
    server, _world, questions, pool, out = setup
    server.latency_s = 0.15
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-c", "from trouter.cli import app; app()"]
    command += label_args(questions, pool, out, "--concurrency", "2")
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        # kill once 3 rows are written and calls for an unwritten row are in flight
        done = _written_indices(out)
        if len(done) >= 3 and server.total_calls > calls_to_label(done):
            break
        time.sleep(0.01)
    process.kill()
    process.wait()
    indices = _written_indices(out)
    written = len(indices)
    assert 3 <= written < N_QUESTIONS, "the run must be killed part-way"
    calls_before = server.total_calls
    with out.open("a") as handle:  # a write torn by the kill
        handle.write('{"id": "gsm8k-train-9", "question": "Nat')
    server.latency_s = 0.0
    result = run_label(*label_args(questions, pool, out))
    assert result.exit_code == 0, result.output
    ids = [row["id"] for row in read_labelled(out)]
    assert len(ids) == N_QUESTIONS and len(set(ids)) == N_QUESTIONS
    # finished calls of abandoned questions came from the cache: only the rest was called
    needed = calls_to_label(range(N_QUESTIONS))
    assert needed <= server.total_calls <= needed + 4  # at most the killed in-flight calls
    # it had started more than it wrote (unless the row in flight at the kill got written
    # in the instant between the check above and the kill)
    assert calls_before >= calls_to_label(indices)


def _written_indices(out: Path) -> list[int]:
    """Question indices of the complete rows of ``out`` (not a line a kill may have torn)."""
    if not out.exists():
        return []
    text = out.read_text()
    lines = text.split("\n")[: text.count("\n")]
    return [int(json.loads(line)["id"].rsplit("-", 1)[1]) for line in lines]


def test_dry_run_spends_nothing(setup):
    server, _world, questions, pool, out = setup
    result = run_label(*label_args(questions, pool, out, "--dry-run"))
    assert result.exit_code == 0, result.output
    assert server.total_calls == 0 and not out.exists()
    assert f"{N_QUESTIONS * 4} calls to make" in result.output
    cost = float(re.search(r"estimated cost \$([\d.]+)", result.output).group(1))
    assert cost > 0


def test_cost_ceiling_stops_cleanly_and_resumes(setup, monkeypatch):
    server, _world, questions, pool, out = setup
    # what a complete run costs, measured on a throwaway copy
    full = run_label(*label_args(questions, pool, out.with_name("full.jsonl")))
    assert full.exit_code == 0
    total = sum(
        c["cost_usd"] + c["judge_cost_usd"]
        for row in read_labelled(out.with_name("full.jsonl"))
        for c in row["results"].values()
    )
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(out.parent / "cache2"))  # a cold cache
    server.reset()
    limit = total * 0.4
    # each call is budgeted at its longest possible answer: 64 tokens keeps that under the limit
    options = ["--max-cost", f"{limit:.8f}", "--assumed-answer-tokens", "20", "--concurrency", "1",
               "--answer-max-tokens", "64"]  # fmt: skip
    stopped = run_label(*label_args(questions, pool, out, *options))
    assert stopped.exit_code == 3, stopped.output
    assert "--max-cost" in stopped.output
    rows = read_labelled(out)
    assert 0 < len(rows) < N_QUESTIONS
    spent = float(re.search(r"spent \$([\d.]+)", stopped.output).group(1))
    assert spent <= limit + 1e-4
    resumed = run_label(*label_args(questions, pool, out))
    assert resumed.exit_code == 0, resumed.output
    ids = [row["id"] for row in read_labelled(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == N_QUESTIONS


def test_labelled_loader_names_file_and_line(tmp_path, setup):
    _server, _world, questions, pool, out = setup
    assert run_label(*label_args(questions, pool, out)).exit_code == 0
    lines = out.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    row = json.loads(lines[1])
    row["results"]["weak"]["performance"] = 1.5
    broken.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    with pytest.raises(MalformedDataError, match=r"broken.jsonl:2: .*performance must be in"):
        load_labelled(broken)
    broken.write_text("\n".join([lines[0], "not json", *lines[2:]]) + "\n")
    with pytest.raises(MalformedDataError, match=r"broken.jsonl:2: not valid JSON"):
        read_labelled(broken)
    broken.write_text("\n".join([lines[0], lines[0]]) + "\n")
    with pytest.raises(MalformedDataError, match=r"broken.jsonl:2: id .* repeats line 1"):
        read_labelled(broken)
    from trouter.taxonomy.model import Taxonomy

    data = load_labelled(out, taxonomy=Taxonomy.default())  # GSM8K rows use real leaves
    row = json.loads(lines[0])
    row["leaf_id"] = "Mathematics > Dragon Taming > Easy"
    broken.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(MalformedDataError, match="Dragon Taming.*not a leaf of taxonomy"):
        load_labelled(broken, taxonomy=Taxonomy.default())
    assert not math.isnan(data.cost[0, 0]) and data.cost_source.startswith("usd-per-call")
