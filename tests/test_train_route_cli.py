"""``trouter train`` and ``trouter route`` end to end through the CLI, including bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trouter.cli import app
from trouter.config import data_dir
from trouter.evaluation.real_questions import packaged_question_file
from trouter.taxonomy.model import Taxonomy

MATH_LEAF = "Mathematics > Arithmetic Word Problems > Medium"
CODE_LEAF = "Programming > Python Function Implementation > Medium"
UNSEEN_MATH = (
    "A baker makes 24 muffins and sells them in boxes of 4 for $6 a box. "
    "How much money does he make if he sells every box?"
)


def _result(perf: float, cost: float) -> dict:
    return {"answer": "", "performance": perf, "cost_usd": cost, "input_tokens": 50,
            "output_tokens": 100, "latency_s": 0.5, "error": None}  # fmt: skip


def write_labelled(path: Path, n_real: int = 16) -> None:
    """Labelled rows in the `trouter label` format: mathematics and programming leaves'
    example queries plus real GSM8K / HumanEval questions; one specialist per domain."""
    rows = [(leaf.path[-1].example, leaf.id) for leaf in Taxonomy.default().leaves()
            if leaf.domain in ("Mathematics", "Programming")]  # fmt: skip
    root = data_dir() / "questions"
    with open(root / "gsm8k_train.jsonl", encoding="utf-8") as fh:
        rows += [(json.loads(fh.readline())["question"], MATH_LEAF) for _ in range(n_real)]
    with gzip.open(packaged_question_file("HumanEval.jsonl.gz"), "rt", encoding="utf-8") as fh:
        rows += [(json.loads(fh.readline())["prompt"], CODE_LEAF) for _ in range(n_real)]
    with open(path, "w", encoding="utf-8") as out:
        for i, (question, leaf) in enumerate(rows):
            math = leaf.startswith("Mathematics")
            results = {
                "mathstral": _result(1.0 if math else 0.0, 0.0002),
                "coder": _result(0.0 if math else 1.0, 0.0002),
                "big": _result(1.0, 0.01),
            }
            out.write(json.dumps({"id": f"q{i}", "question": question, "reference": "",
                                  "leaf_id": leaf, "generator": "test",
                                  "results": results}) + "\n")  # fmt: skip


def run(args: list[str], **kwargs):
    return CliRunner().invoke(app, args, **kwargs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("route")
    labelled = folder / "labelled.jsonl"
    # 40 real questions per domain: with 16 the task typing of an unseen HumanEval prompt
    # hung on float noise in the embeddings (q = 0.58 for a *maths* leaf on one cache state)
    write_labelled(labelled, n_real=40)
    result = run(["train", "--router", "trouter", "--train-file", str(labelled),
                  "--out", str(folder / "router"), "--param", "lr=0.003",
                  "--param", "batch_size=8", "--param", "max_epochs=25",
                  "--param", "patience=8", "--param", "min_steps=0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation loss (objective)" in result.output
    assert "task-type top-1 accuracy (validation): 0." in result.output or "1.000" in result.output
    assert (folder / "router" / "router.json").is_file()
    return folder / "router"


def test_route_one_query_prints_table_and_choice(model_dir: Path) -> None:
    result = run(["route", UNSEEN_MATH, "--model-dir", str(model_dir), "--scenario",
                  "balanced"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "chosen model: mathstral" in result.output
    for model in ("mathstral", "coder", "big"):
        assert model in result.output


def test_route_stdin_jsonl_and_text_lines_as_json(model_dir: Path) -> None:
    with gzip.open(packaged_question_file("HumanEval.jsonl.gz"), "rt") as fh:
        code = json.loads(fh.readlines()[150])["prompt"]  # unseen: training used the first 16
    stdin = json.dumps({"query": UNSEEN_MATH}) + "\n\n" + json.dumps({"query": code}) + "\n"
    result = run(["route", "--model-dir", str(model_dir), "--weights", "0.6:-0.4", "--json"],
                 input=stdin.encode("utf-8"))  # fmt: skip
    assert result.exit_code == 0, result.output
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["model"] for d in decisions] == ["mathstral", "coder"]
    assert set(decisions[0]["performance"]) == {"mathstral", "coder", "big"}
    assert decisions[0]["policy"] == "weights(0.6,-0.4)"
    plain = run(["route", "--model-dir", str(model_dir), "--json"], input=UNSEEN_MATH + "\n")
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["model"] == "mathstral"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["route", ""], None, "empty"),
        (["route", "   \n\t"], None, "empty"),
        (["route"], b"\xff\xfe", "not valid UTF-8"),
        (["route"], b"\n  \n", "no queries"),
        (["route"], b'{"question": "wrong key"}\n', 'expected {"query"'),
        (["route", "hi", "--scenario", "balanced", "--weights", "0.5:-0.5"], None, "not both"),
        (["route", "hi", "--weights", "lots"], None, "perf:cost"),
        (["route", "hi", "--policy", "0.7:lots"], None, "0.7:-0.3"),
        (["route", "hi", "--policy", "cheap"], None, "unknown scenario"),
        (["route", "hi", "--policy", "balanced,cost-first"], None, "one policy"),
        (["route", "hi", "--max-cost-usd", "-1"], None, "dollars"),
    ],
)
def test_route_bad_input_exits_2_with_message(model_dir, args, stdin, message) -> None:
    result = run([*args, "--model-dir", str(model_dir)], input=stdin)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_route_huge_query_is_truncated_with_warning(model_dir: Path) -> None:
    huge = (UNSEEN_MATH + " ") * 1000
    assert len(huge) > 100_000
    result = run(["route", "--model-dir", str(model_dir), "--json"], input=huge)
    assert result.exit_code == 0, result.output
    assert "warning" in result.stderr and "characters" in result.stderr
    assert json.loads(result.stdout)["model"] == "mathstral"


def test_route_and_train_usage_errors(tmp_path: Path) -> None:
    missing = run(["route", "hello", "--model-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "not a trained router directory" in missing.output
    both = run(["train", "--router", "trouter", "--suite", "routerbench",
                "--train-file", "x.jsonl", "--out", str(tmp_path / "r")])  # fmt: skip
    assert both.exit_code == 2 and "exactly one" in both.output
    unknown = run(["train", "--router", "nope", "--suite", "routerbench", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "unknown router" in unknown.output
    bad = run(["train", "--router", "trouter", "--suite", "routerbench", "--out",
               str(tmp_path), "--param", "learning_rate=1"])  # fmt: skip
    assert bad.exit_code == 2 and "learning_rate" in bad.output


def test_route_json_has_the_fields_of_route_result(model_dir: Path) -> None:
    import dataclasses

    import trouter
    from trouter.serving.api import RouteResult, internal_fields

    result = run(["route", UNSEEN_MATH, "--model-dir", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    public = [f.name for f in dataclasses.fields(RouteResult)]
    public = [name for name in public if name not in internal_fields(RouteResult)]
    assert internal_fields(RouteResult) == ["logged"]
    assert list(decision) == public
    python = trouter.load(model_dir).route(UNSEEN_MATH)
    assert decision == json.loads(json.dumps(python.to_dict()))


def test_route_takes_a_weights_policy_and_a_dollar_limit(model_dir: Path, tmp_path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "models:\n"
        + "".join(
            f"  - {{name: {m}, litellm_model: openai/{m}, input_price_per_mtok: {p}, "
            f"output_price_per_mtok: {p}}}\n"
            for m, p in (("mathstral", 1.0), ("coder", 1.0), ("big", 100.0))
        )
    )
    args = ["route", UNSEEN_MATH, "--model-dir", str(model_dir), "--pool", str(pool), "--json"]
    heavy = run([*args, "--policy", "1:-0.0"])
    assert heavy.exit_code == 0, heavy.output
    decision = json.loads(heavy.stdout)
    assert decision["policy"] == "weights(1,-0)"
    # the dearest model's predicted cost: its price x (tokens of the query + 256 out)
    tokens = -(-len(UNSEEN_MATH) // 4)
    assert decision["cost_usd"]["big"] == pytest.approx((tokens + 256) * 100.0 / 1e6)
    limited = run([*args, "--policy", "1:-0.0", "--max-cost-usd", "0.001"])
    assert limited.exit_code == 0, limited.output
    capped = json.loads(limited.stdout)
    assert "big" not in capped["ranking"] and capped["cost_usd"][capped["model"]] <= 0.001
    none = run([*args, "--max-cost-usd", "0.00001"])
    assert none.exit_code == 2 and "no served model fits max_cost_usd" in none.output
