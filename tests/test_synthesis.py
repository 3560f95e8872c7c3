"""Cold-start synthesis: the taxonomy loop and QA generation, against the stand-in server.

Every LLM call goes through the real client (LiteLLM, HTTP) to the local stand-in, whose
responder plays the generator; the tests count what the server received.
"""

from __future__ import annotations

import json

import pytest
from standin import StandIn

from trouter.synthesis.budget import BudgetExceededError, CostMeter
from trouter.synthesis.llmjson import JSONExtractError, MalformedOutputError, extract_json
from trouter.synthesis.prompts import parse_pairs
from trouter.synthesis.qa import synthesize_qa
from trouter.taxonomy.builder import (
    BuildSettings,
    LoopRecord,
    TaxonomyBuilder,
    TaxonomyBuildError,
    build_taxonomy,
)
from trouter.taxonomy.inputs import load_example_queries, parse_domain_arg
from trouter.taxonomy.model import TaskProfile, Taxonomy
from trouter.taxonomy.prompts import LevelSpec, generate_messages, parse_node_set


def nodes_json(*names: str, critique: str | None = None) -> str:
    body = {
        "nodes": [
            {"name": n, "definition": f"Tasks about {n}.", "example": f"A {n} query?"}
            for n in names
        ]
    }
    if critique is not None:
        body = {"critique": critique, **body}
    return json.dumps(body)


# ----- parsing (no server) -----------------------------------------------------------------
def test_extract_json_finds_first_value_in_prose_and_fences():
    assert extract_json('Sure! ```json\n{"a": [1, 2]}\n``` done') == {"a": [1, 2]}
    assert extract_json('note {not json} then [{"x": 1}]') == [{"x": 1}]
    with pytest.raises(JSONExtractError, match="truncated"):
        extract_json('{"nodes": [{"name": "A"')
    with pytest.raises(JSONExtractError, match="no JSON"):
        extract_json("I cannot help with that.")


def test_parse_node_set_repairs_what_it_can_and_rejects_the_rest():
    spec = LevelSpec("subcategory", "Law", cap=2)
    nodes, notes = parse_node_set(spec, json.loads(nodes_json("A", "a", "B", "C")))
    assert [n.name for n in nodes] == ["A", "B"]  # duplicate dropped, cap applied
    assert any("duplicate" in n for n in notes) and any("dropped C" in n for n in notes)
    with pytest.raises(ValueError, match="'>'"):
        parse_node_set(spec, json.loads(nodes_json("A > B")))
    with pytest.raises(ValueError, match='"definition"'):
        parse_node_set(spec, {"nodes": [{"name": "A", "example": "x"}]})
    # a child that repeats its parent (a 1.5B generator did this for difficulty levels)
    law = TaskProfile(name="Law", definition="Legal tasks.", example="Is it legal?")
    child = LevelSpec("subcategory", "Law", cap=3, parents=(law,))
    with pytest.raises(ValueError, match="like the node above it"):
        parse_node_set(child, json.loads(nodes_json("law", "Contracts")))


def test_parse_node_set_keeps_user_domains_verbatim():
    legal = TaskProfile(name="Legal reasoning", definition="Statutes and cases.", example="")
    spec = LevelSpec("domain", "", cap=3, required=(legal,), closed=True)
    nodes, notes = parse_node_set(spec, json.loads(nodes_json("legal reasoning", "Cooking")))
    assert [(n.name, n.definition) for n in nodes] == [("Legal reasoning", "Statutes and cases.")]
    assert "Cooking" in notes[0]
    with pytest.raises(ValueError, match="Legal reasoning"):
        parse_node_set(spec, json.loads(nodes_json("Cooking")))
    # a small generator shortens the name it was told to keep (seen with Qwen2.5-1.5B)
    nodes, notes = parse_node_set(spec, json.loads(nodes_json("Legal", "Cooking")))
    assert [n.name for n in nodes] == ["Legal reasoning"] and "took 'Legal'" in notes[0]


def test_parse_node_set_preferences_always_offer_no_preference():
    spec = LevelSpec("preference", "Law > Contracts", cap=2)
    nodes, _ = parse_node_set(spec, json.loads(nodes_json("Brief", "Detailed", "Cited")))
    assert [n.name for n in nodes] == ["No explicit preference", "Brief"]


def test_parse_pairs_skips_incomplete_items():
    data = {"pairs": [{"question": "Q1", "answer": "A1"}, {"question": "Q2"}, "junk"]}
    assert parse_pairs(data) == [("Q1", "A1")]
    with pytest.raises(ValueError):
        parse_pairs({"pairs": [{"question": "Q2"}]})


def test_domain_inputs_decide_what_the_llm_may_propose(tmp_path):
    builder = TaxonomyBuilder(None, None, BuildSettings(max_domains=8))
    seeds = builder.domain_spec([], [])  # no input: the method's six seeds, up to 4 more
    assert [d.name for d in seeds.required][:2] == ["Mathematics", "Creative Writing"]
    assert not seeds.closed and seeds.cap == 8
    legal = parse_domain_arg("Legal reasoning: statutes, contracts and case law")
    assert legal.definition == "statutes, contracts and case law"
    assert builder.domain_spec([legal], []).closed  # only the user's domains
    queries_file = tmp_path / "queries.jsonl"
    queries_file.write_text('{"question": "Is a verbal contract binding?"}\n\n{"query": "Dose?"}')
    queries = load_example_queries(queries_file)
    assert queries == ["Is a verbal contract binding?", "Dose?"]
    spec = builder.domain_spec([legal], queries)  # the LLM adds domains covering examples
    assert not spec.closed
    assert "Is a verbal contract binding?" in generate_messages(spec)[1]["content"]
    with pytest.raises(TaxonomyBuildError, match="max_domains"):
        TaxonomyBuilder(None, None, BuildSettings(max_domains=1)).domain_spec([legal, legal], [])
    with pytest.raises(TaxonomyBuildError, match="max_subcategories"):
        BuildSettings(max_subcategories=11).check()


# ----- against the stand-in server ---------------------------------------------------------
LEVEL_NAMES = {
    "top-level domains": ["Law", "Medicine"],
    "subcategories": ["Contracts", "Torts"],
    "difficulty levels": ["Easy", "Hard"],
    "preferences": ["Concise answer", "Step by step"],
}


def last_user(messages) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def first_prompt(messages) -> str:
    """The step's own prompt (a retry appends the failed reply and the feedback after it)."""
    return next(m["content"] for m in messages if m["role"] == "user")


class TaxonomyGenerator:
    """Plays the generator: fixed first sets; a critique revises every example once (or
    every round, with ``always_revise``); the choice goes to the revised set, or always to
    position A with ``choose_a`` (a position-biased judge)."""

    def __init__(self, always_revise: bool = False, choose_a: bool = False) -> None:
        self.always_revise = always_revise
        self.choose_a = choose_a

    def __call__(self, messages, model) -> str:
        prompt = first_prompt(messages)
        if "Two candidate versions" in prompt:
            first = extract_json(prompt.split("Set A:", 1)[1])
            letter = "A" if self.choose_a or "(revised" in json.dumps(first) else "B"
            return json.dumps({"reason": "B is vaguer" if letter == "A" else "", "choice": letter})
        if "Review round" in prompt:
            current = extract_json(prompt)["nodes"]
            if self.always_revise or "(revised" not in json.dumps(current):
                for node in current:
                    node["example"] += " (revised)"
            return json.dumps({"critique": "Examples are too short.", "nodes": current})
        for marker, names in LEVEL_NAMES.items():
            if f"Write the {marker}" in prompt:
                return nodes_json(*names)
        raise AssertionError(f"unexpected prompt: {prompt[:200]}")


@pytest.fixture
def server():
    """A stand-in OpenAI-compatible server on loopback, playing the generator."""
    with StandIn() as running:
        yield running


@pytest.fixture
def client(tmp_path):
    from trouter.llm import LLMClient

    llm = LLMClient(cache_dir=tmp_path / "llm-cache", backoff_base_s=0.01)
    yield llm
    llm.close()


def generator_endpoint(server, name: str = "gen"):
    from trouter.llm.pool import ModelEndpoint

    return ModelEndpoint(
        name=name,
        litellm_model="openai/server-large",
        api_base=server.base_url,
        input_price_per_mtok=1.0,
        output_price_per_mtok=4.0,
    )


SMALL = dict(
    domains=["Law: questions about legal rules", "Medicine: questions about health"],
    max_subcategories=2,
    max_difficulties=3,
)


def test_taxonomy_loop_stops_after_two_unchanged_rounds(server, client):
    server.responder = TaxonomyGenerator()
    records: list[LoopRecord] = []
    meter = CostMeter()
    taxonomy = build_taxonomy(client, generator_endpoint(server), **SMALL, meter=meter,
                              records=records)  # fmt: skip
    assert taxonomy.leaf_ids()[:2] == ["Law > Contracts > Easy", "Law > Contracts > Hard"]
    assert len(taxonomy.leaves()) == 8
    # the accepted revision is what was kept, and the user's domain definition won
    assert taxonomy.domains[0].example.endswith("(revised)")
    assert taxonomy.domains[0].definition == "questions about legal rules"
    # per loop: generate, revise (changed) + choose, revise (same), revise (same) = 5 calls
    assert len(records) == 1 + 2 + 4
    assert all(r.converged and r.rounds == 3 and r.calls == 5 for r in records)
    assert server.total_calls == meter.calls == 5 * 7
    assert meter.spent_usd > 0


def test_preferences_are_built_per_subcategory_and_offer_no_preference(server, client):
    server.responder = TaxonomyGenerator()
    records: list[LoopRecord] = []
    taxonomy = build_taxonomy(client, generator_endpoint(server), **SMALL,
                              include_preferences=True, records=records)  # fmt: skip
    assert sum(r.label.startswith("preference set") for r in records) == 4  # one per subcategory
    for leaf in taxonomy.leaves():
        names = [p.name for p in leaf.preferences]
        assert names == ["No explicit preference", "Concise answer", "Step by step"]


def test_choose_order_is_randomised_with_the_seed(server, client, tmp_path):
    server.responder = TaxonomyGenerator(always_revise=True, choose_a=True)
    runs = {}
    for label, seed in (("first", 0), ("again", 0), ("other", 1)):
        records: list[LoopRecord] = []
        taxonomy = build_taxonomy(
            client, generator_endpoint(server), **SMALL, seed=seed, max_rounds_upper=6,
            max_rounds_lower=6, records=records,
        )  # fmt: skip
        runs[label] = ({r.label: r.order for r in records}, taxonomy)
    orders = [o for order in runs["first"][0].values() for o in order]
    assert {"revised-first", "current-first"} <= set(orders)  # both positions occur
    assert runs["first"][0] == runs["again"][0]  # same seed, same presentation order
    assert runs["first"][1] == runs["again"][1]
    assert runs["first"][0] != runs["other"][0]  # another seed, another order
    # with a judge that always picks A, the order alone decides how often revisions win
    for order in runs["first"][0].values():
        assert order[-2:] == ["current-first", "current-first"] or len(order) == 6


def test_malformed_output_is_retried_then_reported_and_the_run_resumes(server, client, tmp_path):
    good = TaxonomyGenerator()
    flaky = {"left": 1}

    def broken_medicine(messages, model):
        prompt = first_prompt(messages)
        if "Domain: Medicine" in prompt and "Write the subcategories" in prompt:
            return "Sure, here are the subcategories: Cardiology, Oncology."
        if "Domain: Law" in prompt and "Write the subcategories" in prompt and flaky["left"]:
            flaky["left"] -= 1
            return '{"nodes": [{"name": "Contracts", "definition": "Deals."'  # truncated
        return good(messages, model)

    server.responder = broken_medicine
    checkpoint = tmp_path / "tax.progress.json"
    with pytest.raises(MalformedOutputError) as err:
        build_taxonomy(client, generator_endpoint(server), **SMALL, checkpoint=checkpoint)
    message = str(err.value)
    assert "subcategory set for Medicine" in message and "'gen'" in message
    assert "3 times" in message and "no JSON" in message
    medicine = [
        r for r in server.requests if "Domain: Medicine" in first_prompt(r["body"]["messages"])
    ]
    assert len(medicine) == 3
    assert "could not be used" in last_user(medicine[-1]["body"]["messages"])
    # Law's truncated reply was retried with the error fed back, and then succeeded
    saved = json.loads(checkpoint.read_text())["items"]
    assert set(saved) == {"domain|", "subcategory|Law"}

    server.reset()
    server.responder = good
    taxonomy = build_taxonomy(client, generator_endpoint(server), **SMALL, checkpoint=checkpoint)
    prompts = [first_prompt(r["body"]["messages"]) for r in server.requests]
    assert not any("Write the top-level" in p for p in prompts)  # domains: from the checkpoint
    assert not any("Domain: Law" in p and "subcategories" in p for p in prompts)
    assert len(taxonomy.leaves()) == 8


# ----- QA synthesis --------------------------------------------------------------------------
def small_taxonomy() -> Taxonomy:
    def node(name, children=()):
        return {"name": name, "definition": f"{name} tasks.", "example": f"A {name} query?",
                "children": list(children)}  # fmt: skip

    return Taxonomy.from_data(
        {
            "name": "t",
            "domains": [node("Mathematics", [node("Word problems", [node("Easy"), node("Hard")])])],
        }  # fmt: skip
    )


def gsm8k(data_dir, n: int) -> list[tuple[str, str]]:
    with open(data_dir / "questions" / "gsm8k_train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(n)]
    return [(r["question"], r["answer"].split("####")[-1].strip()) for r in rows]


def pairs_json(pairs) -> str:
    return json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})


def qa_prompt_fields(messages) -> tuple[str, int]:
    prompt = first_prompt(messages)
    difficulty = prompt.split("Difficulty: ", 1)[1].split(" ", 1)[0]
    batch = int(prompt.split("Batch ", 1)[1].split(":", 1)[0])
    return difficulty, batch


def sampling_generator(originals):
    """A sampling generator: three new GSM8K questions per call, from a range per difficulty."""
    cursor = {"Easy": 0, "Hard": 20}

    def sampling(messages, model):
        difficulty, _ = qa_prompt_fields(messages)
        start = cursor[difficulty]
        cursor[difficulty] += 3
        return pairs_json(originals[start : start + 3])

    return sampling


def test_qa_dedup_rejects_repeats_and_paraphrases(server, client, tmp_path, data_dir):
    originals = gsm8k(data_dir, 20)
    own = {"Easy": originals[:10], "Hard": originals[10:]}

    def repetitive(messages, model):
        difficulty, batch = qa_prompt_fields(messages)
        fresh = own[difficulty][3 * (batch - 1) : 3 * batch]
        if batch == 1:  # a repeat inside the batch
            return pairs_json([fresh[0], fresh[1], fresh[0], fresh[2]])
        earlier = own[difficulty][3 * (batch - 2)]
        paraphrase = ("Please solve: " + earlier[0] + " Show your work.", earlier[1])
        return pairs_json([fresh[0], earlier, fresh[1], paraphrase, fresh[2]])

    server.responder = repetitive
    out = tmp_path / "qa.jsonl"
    report = synthesize_qa(client, generator_endpoint(server), small_taxonomy(), out_path=out,
                           per_leaf=8, per_call=5)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for difficulty in ("Easy", "Hard"):
        kept = [r["question"] for r in rows if r["leaf_id"].endswith(difficulty)]
        assert kept == [q for q, _ in own[difficulty][:8]]  # originals only, in order
    # batch 1: the inner repeat; batch 2: a copy and a paraphrase; batch 3: a copy
    assert [r.duplicates for r in report.leaves] == [4, 4]
    assert [r.calls for r in report.leaves] == [3, 3] and not report.given_up
    assert {"id", "question", "reference", "leaf_id", "generator"} == set(rows[0])
    first = next(r for r in rows if r["question"] == originals[0][0])
    assert first["generator"] == "gen" and first["reference"] == originals[0][1]
    assert first["leaf_id"] == "Mathematics > Word problems > Easy"
    # every request was distinct: batch number, and the kept questions listed to avoid
    prompts = [first_prompt(r["body"]["messages"]) for r in server.requests]
    assert len(set(prompts)) == len(prompts) == 6
    easy_batch2 = next(p for p in prompts if "Difficulty: Easy" in p and "Batch 2:" in p)
    assert "Do not repeat or paraphrase the 3 questions" in easy_batch2
    assert originals[2][0][:60] in easy_batch2


def test_qa_gives_a_stalled_leaf_up_after_barren_calls(server, client, tmp_path, data_dir):
    originals = gsm8k(data_dir, 20)
    own = {"Easy": originals[:10], "Hard": originals[10:]}

    def saturated(messages, model):  # batch 1 is new; every later batch repeats batch 1
        difficulty, _ = qa_prompt_fields(messages)
        return pairs_json(own[difficulty][:3])

    server.responder = saturated
    endpoint = generator_endpoint(server)
    options = {"per_leaf": 8, "per_call": 3, "max_calls_per_leaf": 6}
    stalled = synthesize_qa(client, endpoint, small_taxonomy(), out_path=tmp_path / "a.jsonl",
                            stall_calls=2, **options)  # fmt: skip
    assert [(r.kept, r.calls) for r in stalled.leaves] == [(3, 3), (3, 3)]
    assert len(stalled.given_up) == 2
    unlimited = synthesize_qa(client, endpoint, small_taxonomy(), out_path=tmp_path / "b.jsonl",
                              **options)  # fmt: skip
    assert [(r.kept, r.calls) for r in unlimited.leaves] == [(3, 6), (3, 6)]


def test_qa_resumes_after_interruption_without_duplicates(server, client, tmp_path, data_dir):
    server.responder = sampling_generator(gsm8k(data_dir, 40))
    out = tmp_path / "qa.jsonl"
    endpoint = generator_endpoint(server)
    with pytest.raises(BudgetExceededError):
        synthesize_qa(client, endpoint, small_taxonomy(), out_path=out, per_leaf=7, per_call=3,
                      meter=CostMeter(max_cost_usd=0.004))  # fmt: skip
    first_rows = out.read_text().splitlines()
    assert 0 < len(first_rows) < 14
    with out.open("a") as fh:  # a kill in the middle of a write
        fh.write('{"id": "syn-0000", "question": "half a ro')
    calls_before = server.total_calls
    report = synthesize_qa(client, endpoint, small_taxonomy(), out_path=out, per_leaf=7,
                           per_call=3)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().splitlines()[: len(first_rows)] == first_rows
    assert len(rows) == 14 and len({r["id"] for r in rows}) == 14
    assert len({r["question"] for r in rows}) == 14
    assert sorted(r.kept for r in report.leaves) == [7, 7]
    assert sum(r.added for r in report.leaves) == 14 - len(first_rows)
    # only the missing questions were asked for: ceil(missing / 3) calls per leaf
    first_leaves = [json.loads(line)["leaf_id"] for line in first_rows]
    missing = [7 - first_leaves.count(leaf) for leaf in small_taxonomy().leaf_ids()]
    assert sorted(missing) != [0, 0]
    assert server.total_calls - calls_before == sum(-(-m // 3) for m in missing)


def test_cli_dry_run_spends_nothing_and_max_cost_stops_with_exit_3(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from trouter.cli import app

    monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache"))
    server.responder = TaxonomyGenerator()
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        f"models:\n  - name: gen\n    litellm_model: openai/standin-large\n"
        f"    api_base: {server.base_url}\n    input_price_per_mtok: 1.0\n"
        f"    output_price_per_mtok: 4.0\n"
    )
    out = tmp_path / "taxonomy.json"
    args = ["synth", "taxonomy", "--generator", "gen", "--pool", str(pool), "--out", str(out),
            "--domain", "Law: legal rules", "--domain", "Medicine: health",
            "--max-subcategories", "2", "--max-difficulties", "3"]  # fmt: skip
    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "calls" in dry.stdout and "$" in dry.stdout
    assert server.total_calls == 0
    stopped = runner.invoke(app, [*args, "--max-cost", "0.002"])
    assert stopped.exit_code == 3, stopped.output
    assert "cost ceiling reached" in stopped.output and not out.exists()
    assert (tmp_path / "taxonomy.json.progress.json").exists()
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert len(Taxonomy.load(out).leaves()) == 8
    assert not (tmp_path / "taxonomy.json.progress.json").exists()
    missing = runner.invoke(app, [*args[:3], "nope", *args[4:]])
    assert missing.exit_code == 1 and "'nope' is not in the pool" in missing.output


def test_qa_full_disk_leaves_no_torn_row_and_resumes(server, client, tmp_path, data_dir):
    import errno
    import os

    import trouter.data.jsonl as jsonl
    from trouter.data.jsonl import OutputWriteError

    server.responder = sampling_generator(gsm8k(data_dir, 40))
    out = tmp_path / "qa.jsonl"
    real_write, written = os.write, []

    def filling_disk(fd, data):
        if fd < 3 or os.readlink(f"/proc/self/fd/{fd}") != str(out):
            return real_write(fd, data)
        if len(written) < 3:
            written.append(fd)
            return real_write(fd, data)
        if len(written) == 3:  # half a row reaches the disk, then it is full
            written.append(fd)
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(jsonl.os, "write", filling_disk)
        with pytest.raises(OutputWriteError, match="No space left on device.*rerun to resume"):
            synthesize_qa(client, generator_endpoint(server), small_taxonomy(), out_path=out,
                          per_leaf=7, per_call=3, concurrency=1)  # fmt: skip
    assert out.read_bytes().endswith(b"\n") and len(out.read_text().splitlines()) == 3
    report = synthesize_qa(client, generator_endpoint(server), small_taxonomy(), out_path=out,
                           per_leaf=7, per_call=3)  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 14 == len({r["id"] for r in rows}) and not report.repaired_tail
