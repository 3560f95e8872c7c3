"""The taxonomy type: validation errors that name the node, files, the packaged default,
embedding assignment on real benchmark queries, and ``trouter taxonomy``."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trouter.cli import app
from trouter.evaluation.real_questions import packaged_question_file
from trouter.taxonomy import Taxonomy, TaxonomyError
from trouter.taxonomy.assign import assign_leaves, assign_top1, leaf_embeddings


def _node(name: str, children: list | None = None) -> dict:
    node = {"name": name, "definition": f"What {name} covers.", "example": f"A {name} query?"}
    if children is not None:
        node["children"] = children
    return node


def _levels() -> list[dict]:
    return [_node("Easy"), _node("Medium"), _node("Hard")]


def _tiny() -> dict:
    return {
        "name": "tiny",
        "description": "two domains",
        "domains": [
            _node("Mathematics", [_node("Algebra", _levels()), _node("Geometry", _levels())]),
            _node("Programming", [_node("Python", _levels())]),
        ],
    }


def _error(data: dict) -> str:
    with pytest.raises(TaxonomyError) as info:
        Taxonomy.from_data(data, source="t.json")
    return str(info.value)


# ----- validation --------------------------------------------------------------------------
def test_missing_field_names_the_node_path() -> None:
    data = _tiny()
    del data["domains"][0]["children"][0]["children"][1]["definition"]
    assert _error(data) == "t.json: Mathematics > Algebra > Medium: missing 'definition'"

    data = _tiny()
    del data["domains"][0]["children"][0]["children"][1]["name"]
    assert "Mathematics > Algebra > (child 2): missing 'name'" in _error(data)

    data = _tiny()
    data["domains"][1]["example"] = "   "
    assert "Programming: 'example' must be a non-empty string" in _error(data)


def test_depth_rules_name_the_node() -> None:
    shallow = _tiny()
    shallow["domains"][0]["children"][1]["children"] = []
    msg = _error(shallow)
    assert "Mathematics > Geometry" in msg and "at least one difficulty level" in msg

    no_subcategories = _tiny()
    del no_subcategories["domains"][1]["children"]
    assert "Programming: a domain needs at least one subcategory" in _error(no_subcategories)

    deep = _tiny()
    hard = deep["domains"][1]["children"][0]["children"][2]
    hard["children"] = [_node("No explicit preference", [_node("Too deep")])]
    msg = _error(deep)
    assert "Programming > Python > Hard > No explicit preference" in msg and "too deep" in msg


def test_caps_duplicates_and_separator() -> None:
    many_levels = _tiny()
    many_levels["domains"][0]["children"][0]["children"] = [_node(f"L{i}") for i in range(6)]
    assert "Mathematics > Algebra: 6 difficulty levels, at most 5 allowed" in _error(many_levels)

    many_subs = _tiny()
    many_subs["domains"][1]["children"] = [_node(f"S{i}", _levels()) for i in range(11)]
    assert "Programming: 11 subcategories, at most 10 allowed" in _error(many_subs)

    duplicate = _tiny()
    duplicate["domains"][0]["children"][1]["name"] = "algebra "
    msg = _error(duplicate)
    assert "Mathematics > algebra: duplicate subcategory name 'algebra'" in msg

    separator = _tiny()
    separator["domains"][1]["name"] = "Code > Python"
    assert "contains ' > '" in _error(separator)

    unknown = _tiny()
    unknown["domains"][0]["childs"] = []
    assert "Mathematics: unknown field(s) ['childs']" in _error(unknown)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "domains": [')
    with pytest.raises(TaxonomyError, match=r"broken\.json: not valid JSON \(line 1"):
        Taxonomy.load(broken)
    with pytest.raises(TaxonomyError, match="does not exist"):
        Taxonomy.load(tmp_path / "missing.json")


def test_direct_construction_is_validated_too() -> None:
    data = _tiny()
    data["domains"][0]["children"][0]["children"] = []
    with pytest.raises(ValueError, match="Mathematics > Algebra"):
        Taxonomy(**data)


# ----- leaves, files -----------------------------------------------------------------------
def test_leaves_and_lookup() -> None:
    taxonomy = Taxonomy.from_data(_tiny())
    assert taxonomy.leaf_ids()[:2] == [
        "Mathematics > Algebra > Easy",
        "Mathematics > Algebra > Medium",
    ]
    assert len(taxonomy.leaves()) == 9
    leaf = taxonomy.leaf("Programming > Python > Hard")
    assert (leaf.domain, leaf.subcategory, leaf.difficulty) == ("Programming", "Python", "Hard")
    text = leaf.profile_text()
    assert "Python" in text and "What Hard covers." in text and "A Hard query?" in text
    with pytest.raises(KeyError, match="did you mean 'Programming > Python > Hard'"):
        taxonomy.leaf("Programming > Pyton > Hard")


def test_save_load_round_trip(tmp_path: Path) -> None:
    data = _tiny()
    data["domains"][1]["children"][0]["children"][0]["children"] = [_node("Concise answer")]
    taxonomy = Taxonomy.from_data(data)
    path = tmp_path / "sub" / "tax.json"
    taxonomy.save(path)
    again = Taxonomy.load(path)
    assert again == taxonomy
    assert again.leaf("Programming > Python > Easy").preferences[0].name == "Concise answer"
    assert [p.name for p in path.parent.iterdir()] == ["tax.json"]  # no temp file left behind
    assert json.loads(path.read_text())["domains"][0]["children"][0]["name"] == "Algebra"


def test_default_taxonomy_is_valid_and_broad() -> None:
    taxonomy = Taxonomy.default()
    leaves = taxonomy.leaves()
    assert len(leaves) >= 100
    assert len(set(taxonomy.leaf_ids())) == len(leaves)
    assert 12 <= len(taxonomy.domains) <= 14
    for domain in taxonomy.domains:
        assert 3 <= len(domain.children) <= 6, domain.name
        for sub in domain.children:
            assert [d.name for d in sub.children] == ["Easy", "Medium", "Hard"], sub.name
    for needed in (
        "Mathematics",
        "Programming",
        "Legal",
        "Medicine and Health",
        "Creative Writing",
    ):
        assert needed in taxonomy.domain_names()
    # the packaged file is also readable as an ordinary taxonomy file
    packaged = Path(__file__).parents[1] / "src" / "trouter" / "taxonomy" / "default.json"
    assert Taxonomy.load(packaged) == taxonomy


# ----- assignment on real queries ----------------------------------------------------------
@pytest.fixture(scope="module")
def real_queries(data_dir: Path) -> dict[str, list[str]]:
    with open(data_dir / "questions" / "gsm8k_test.jsonl", encoding="utf-8") as fh:
        gsm8k = [json.loads(line)["question"] for _, line in zip(range(12), fh, strict=False)]
    with gzip.open(packaged_question_file("HumanEval.jsonl.gz"), "rt", encoding="utf-8") as fh:
        humaneval = [json.loads(line)["prompt"] for _, line in zip(range(12), fh, strict=False)]
    return {"Mathematics": gsm8k, "Programming": humaneval}


def test_real_queries_land_in_their_domain(real_queries: dict[str, list[str]]) -> None:
    taxonomy = Taxonomy.default()
    assert leaf_embeddings(taxonomy).shape == (len(taxonomy.leaves()), 384)
    texts = real_queries["Mathematics"] + real_queries["Programming"]
    weights = assign_leaves(taxonomy, texts)
    assert weights.shape == (len(texts), len(taxonomy.leaves()))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    top = assign_top1(taxonomy, texts)
    assert top == [taxonomy.leaf_ids()[k] for k in weights.argmax(axis=1)]
    for domain, queries in real_queries.items():
        hits = [leaf.split(" > ")[0] == domain for leaf in assign_top1(taxonomy, queries)]
        assert np.mean(hits) >= 0.75, (domain, hits)
    # a sharper temperature concentrates the same ranking
    sharp = assign_leaves(taxonomy, texts, temperature=0.01)
    assert np.all(sharp.max(axis=1) >= weights.max(axis=1) - 1e-12)
    assert np.array_equal(sharp.argmax(axis=1), weights.argmax(axis=1))


#: Benchmark task -> the default taxonomy's domain its queries belong to (unambiguous tasks).
TASK_DOMAIN = {
    "gsm8k": "Mathematics",
    "math": "Mathematics",
    "mbpp": "Programming",
    "human_eval": "Programming",
    "agentverse-logicgrid": "Logic and Puzzles",
    "commongen": "Commonsense Reasoning",
    "gpqa": "Science",
}


def test_llmrouter_tasks_land_in_their_domain(data_dir: Path) -> None:
    per_task: dict[str, list[str]] = {task: [] for task in TASK_DOMAIN}
    with open(data_dir / "llmrouter" / "default_query_test.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["task_name"] in per_task and len(per_task[row["task_name"]]) < 8:
                per_task[row["task_name"]].append(row["query"])
    taxonomy = Taxonomy.default()
    texts = [q for queries in per_task.values() for q in queries]
    domains = [leaf.split(" > ")[0] for leaf in assign_top1(taxonomy, texts)]
    expected = [TASK_DOMAIN[task] for task, queries in per_task.items() for _ in queries]
    hits = np.array(domains) == np.array(expected)
    assert hits.mean() >= 0.75, list(zip(expected, domains, strict=True))
    start = 0
    for task, queries in per_task.items():
        share = hits[start : start + len(queries)].mean()
        assert share >= 0.5, (task, share)
        start += len(queries)


# ----- CLI ---------------------------------------------------------------------------------
def test_show_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["taxonomy", "show"])
    assert shown.exit_code == 0, shown.output
    assert "Mathematics" in shown.output and "Arithmetic Word Problems" in shown.output

    domains_only = runner.invoke(app, ["taxonomy", "show", "--depth", "1"])
    assert domains_only.exit_code == 0
    assert "Programming (5)" in domains_only.output and "Algebra" not in domains_only.output

    listed = runner.invoke(app, ["taxonomy", "show", "--leaves"])
    assert listed.exit_code == 0
    assert listed.output.splitlines() == Taxonomy.default().leaf_ids()

    good = tmp_path / "tiny.json"
    Taxonomy.from_data(_tiny()).save(good)
    tiny = runner.invoke(app, ["taxonomy", "show", str(good), "--leaves"])
    assert tiny.exit_code == 0 and len(tiny.output.splitlines()) == 9

    data = copy.deepcopy(_tiny())
    del data["domains"][1]["children"][0]["children"][2]["example"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    failed = runner.invoke(app, ["taxonomy", "show", str(bad)])
    assert failed.exit_code == 1
    assert "Programming > Python > Hard: missing 'example'" in failed.output
    assert "Traceback" not in failed.output
