"""Generator-quality filters (`trouter label --filter`, `train/eval --filter`) on real GSM8K
questions against the stand-in pool of tests/test_labelling.py.

Here the questions claim to be written by "strong", a pool member. "strong" gets every
question right except those with index % 5 == 4 (so it disagrees with its own reference
there: not self-consistent); "weak" is right on the even-numbered ones only. So the flags of
every row follow from the index, and the expected kept rows can be listed by hand.
"""

from __future__ import annotations

import json

import pytest
from standin import StandIn
from test_labelling import PRICES, World, gsm8k_rows, label_args, run_label, write_pool

from trouter.data.label_filters import FilterError, keep_rows, parse_filters, rejected_path
from trouter.data.labelled import load_labelled, read_labelled

N = 10
STRONG_WRONG = {i for i in range(N) if i % 5 == 4}
WEAK_RIGHT = {i for i in range(N) if i % 2 == 0}


class ImperfectGenerator(World):
    def __call__(self, messages: list[dict], model: str) -> str:
        question = messages[-1]["content"]
        if model == "strong" and question in self.index and self.index[question] in STRONG_WRONG:
            model = "weak-wrong"  # answers like a wrong model
        return super().__call__(messages, model)


def flags_by_index(i: int) -> dict[str, bool]:
    strong_right, weak_right = i not in STRONG_WRONG, i in WEAK_RIGHT
    return {"self_consistent": strong_right, "discriminative": strong_right != weak_right}


@pytest.fixture
def world(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{**row, "generator": "strong"} for row in gsm8k_rows(data_dir, N)]
    responder = ImperfectGenerator(rows)
    server = StandIn(models=list(PRICES), responder=responder).start()
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    yield server, rows, questions, write_pool(tmp_path / "pool.yaml", server), tmp_path
    server.stop()


def index_of(row: dict) -> int:
    return int(row["id"].rsplit("-", 1)[1])


def test_label_without_filters_stamps_the_flags(world):
    _, _, questions, pool, tmp = world
    out = tmp / "all.jsonl"
    result = run_label(*label_args(questions, pool, out))
    assert result.exit_code == 0, result.output
    rows = read_labelled(out)
    assert len(rows) == N and not rejected_path(out).exists()
    for row in rows:
        assert {k: row[k] for k in ("self_consistent", "discriminative")} == flags_by_index(
            index_of(row)
        )
    # the same filters applied at training time, to a file labelled without them
    kept = {index_of(r) for r in keep_rows(rows, parse_filters("self-consistent,discriminative"))}
    assert kept == {1, 3, 5, 7}
    data = load_labelled(out, filters=("discriminative",))
    assert sorted(index_of({"id": i}) for i in data.query_ids) == [1, 3, 4, 5, 7]


def test_label_filter_sends_failing_rows_to_the_side_file_and_resumes(world):
    server, _, questions, pool, tmp = world
    out = tmp / "kept.jsonl"
    args = label_args(questions, pool, out, "--filter", "self-consistent,discriminative")
    result = run_label(*args)
    assert result.exit_code == 0, result.output
    assert "4 of 10 new rows kept" in result.output
    assert {index_of(r) for r in read_labelled(out)} == {1, 3, 5, 7}
    rejected = read_labelled(rejected_path(out))
    assert {index_of(r) for r in rejected} == set(range(N)) - {1, 3, 5, 7}  # nothing lost
    calls = dict(server.calls)
    again = run_label(*args)  # a rerun finds every question done, in one file or the other
    assert again.exit_code == 0, again.output
    assert "wrote 0 questions" in again.output and server.calls == calls


def test_self_consistency_needs_the_generator_in_the_pool(world):
    server, rows, questions, pool, tmp = world
    foreign = tmp / "foreign.jsonl"
    foreign.write_text("".join(json.dumps({**r, "generator": "gpt-x"}) + "\n" for r in rows))
    result = run_label(*label_args(foreign, pool, tmp / "o.jsonl", "--filter", "self-consistent"))
    assert result.exit_code == 2
    assert "'gpt-x' is not one of strong, weak" in result.output
    assert "Traceback" not in result.output and not server.calls
    bad = run_label(*label_args(questions, pool, tmp / "o.jsonl", "--filter", "sharp"))
    assert bad.exit_code == 2 and "unknown filter 'sharp'" in bad.output


def test_train_refuses_a_filter_it_cannot_decide(world, tmp_path):
    _, _, questions, pool, tmp = world
    out = tmp / "all.jsonl"
    assert run_label(*label_args(questions, pool, out)).exit_code == 0
    rows = read_labelled(out)
    stripped = tmp / "stripped.jsonl"  # generator unknown, flags absent: undecidable
    stripped.write_text(
        "".join(
            json.dumps(
                {k: v for k, v in {**r, "generator": "gsm8k"}.items() if k != "self_consistent"}
            )
            + "\n"
            for r in rows
        )
    )
    with pytest.raises(FilterError, match="not among the labelled models"):
        load_labelled(stripped, filters=("self-consistent",))
    result = run_label(
        "train", "--train-file", str(stripped), "--router", "knn", "--out",
        str(tmp_path / "r"), "--filter", "self-consistent",
    )  # fmt: skip
    assert result.exit_code == 2 and "not among the labelled models" in result.output
    ok = run_label(
        "train", "--train-file", str(out), "--router", "knn", "--out", str(tmp_path / "r2"),
        "--filter", "discriminative",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "training knn on all: 4 train / 1 validation rows" in ok.output


@pytest.mark.parametrize("command", ["eval", "train"])
def test_filter_without_a_labelled_file_is_refused(command, tmp_path):
    args = [command, "--suite", "routerbench", "--filter", "discriminative"]
    if command == "train":
        args += ["--out", str(tmp_path / "r")]
    result = run_label(*args)
    assert result.exit_code == 2
    assert "--filter applies to --train-file only" in " ".join(result.output.split())


def test_a_failed_generator_call_sets_the_row_aside_instead_of_ending_the_run(world):
    server, _, questions, pool, tmp = world
    server.fail_next(1, status=400, model="strong")  # not retried: the cell is masked
    out = tmp / "kept.jsonl"
    result = run_label(*label_args(questions, pool, out, "--filter", "self-consistent"))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rejected = read_labelled(rejected_path(out))
    undecidable = [r for r in rejected if r["results"]["strong"]["error"]]
    assert len(undecidable) == 1 and undecidable[0]["self_consistent"] is None
    assert undecidable[0]["results"]["weak"]["error"] is None  # the other answer is kept
    kept = {index_of(r) for r in read_labelled(out)}
    assert kept | {index_of(r) for r in rejected} == set(range(N))  # nothing lost
    assert kept == set(range(N)) - STRONG_WRONG - {index_of(undecidable[0])}
