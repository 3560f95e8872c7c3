"""The local cold-start experiment: synthetic labels from small local models vs real questions.

One function, :func:`run_cold_start`, for every size (``tiny`` for CI, ``quick`` for the
quickstart, ``full`` for a larger run):

a. QA synthesis with the generator (Qwen-1.5B) for math-word-problem and Python-function
   leaves of the packaged taxonomy -- the real per-leaf generation loop with MiniLM dedup;
b. labelling of that QA by every pool model, scored by the judge (Qwen-1.5B);
c./e. TRouter and TRouter+ trained on the synthetic labels, evaluated on the *real* test half
   next to oracle / best-single / random / cheapest and a kNN router trained on the real train
   half (the same number of real in-domain labels), 3 scenarios, every seed;
d. the same pool answers real GSM8K and HumanEval questions, graded programmatically.

The packaged taxonomy's leaves are used rather than a freshly built taxonomy: on a 2-core
CPU one Qwen-1.5B taxonomy loop costs more than the rest of the run (``trouter synth
taxonomy`` runs that loop when wanted). Every LLM call goes through one ``LLMClient``, so a
rerun is answered from the sqlite cache; each stage writes its rows as it goes and the
state file records per-stage wall times.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trouter.evaluation.scenarios import SCENARIOS
from trouter.local.server import run_watched

LEAVES = (
    "Mathematics > Arithmetic Word Problems > Easy",
    "Programming > Python Function Implementation > Easy",
    "Mathematics > Arithmetic Word Problems > Medium",
    "Programming > Python Function Implementation > Medium",
)
SYNTHETIC_ROUTERS = ("trouter", "trouter+")
IN_DOMAIN_ROUTER = "knn"
BASELINES = ("oracle", "best-single", "random", "cheapest")
#: Output-token cap for a pool model's answer to a synthetic question.
ANSWER_MAX_TOKENS = 192


@dataclass(frozen=True)
class Size:
    """How much of everything one run does. Smaller sizes are prefixes of larger ones
    (same leaves first, same first questions), so they share the LLM cache."""

    n_leaves: int
    per_leaf: int
    per_call: int
    n_gsm8k: int
    n_humaneval: int
    seeds: tuple[int, ...]
    models: tuple[str, ...] | None = None  # None = the whole catalogue
    generator: str | None = None  # None = the offline default


SIZES: dict[str, Size] = {
    "tiny": Size(1, 2, 2, 2, 2, (0,), models=("smollm2-135m-instruct",),
                 generator="smollm2-135m-instruct"),
    "quick": Size(2, 3, 4, 6, 4, (0, 1, 2)),
    "full": Size(4, 3, 4, 8, 4, (0, 1, 2)),
}  # fmt: skip


class Stages:
    """Wall time per stage, saved to ``state.json`` after each stage."""

    def __init__(self, path: Path, announce: Callable[[str], None]) -> None:
        self.path = path
        self.announce = announce
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, Any] = {}

    def run(self, name: str, work: Callable[[], Any]) -> Any:
        self.announce(f"stage {name} ...")
        start = time.perf_counter()
        result = work()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        self.announce(f"stage {name}: {self.seconds[name]:.1f} s")
        self.save()
        return result

    def save(self) -> None:
        state = {"stage_seconds": self.seconds, "counts": self.counts}
        self.path.write_text(json.dumps(state, indent=2))


def _synthesize(client, pool, generator: str, size: Size, out: Path, progress) -> list[dict]:
    from trouter.synthesis.qa import asynthesize_qa, read_qa_rows
    from trouter.taxonomy.model import Taxonomy

    leaf_ids = list(LEAVES[: size.n_leaves])
    run_watched(
        asynthesize_qa(
            client,
            pool.get(generator),
            Taxonomy.default(),
            out_path=out,
            per_leaf=size.per_leaf,
            per_call=size.per_call,
            leaf_ids=leaf_ids,
            max_calls_per_leaf=3,
            concurrency=1,
            progress=progress,
        )
    )
    rows = [r for r in read_qa_rows(out)[0] if r["leaf_id"] in leaf_ids]
    by_leaf: dict[str, list[dict]] = {}
    for row in rows:  # a larger earlier run may have left more rows per leaf
        by_leaf.setdefault(row["leaf_id"], []).append(row)
    return [r for leaf in leaf_ids for r in by_leaf.get(leaf, [])[: size.per_leaf]]


def _evaluate(synthetic, real, seeds, announce: Callable[[str], None]) -> list[dict]:
    """Records for the synthetic-trained routers and the real-train kNN, on the real test."""
    from trouter.evaluation.harness import Fold, evaluate_fold, in_domain_folds
    from trouter.evaluation.metrics import scorable_rows

    test, masked = scorable_rows(real.split("test"))
    synthetic_fold = Fold(
        "all",
        synthetic.split("train"),
        synthetic.split("validation") if len(synthetic.split("validation")) else None,
        test,
        masked,
    )
    records: list[dict] = []
    for seed in seeds:
        records += evaluate_fold(
            synthetic_fold,
            [*BASELINES, *SYNTHETIC_ROUTERS],
            SCENARIOS,
            seed,
            context={"suite": "local-real", "setting": "synthetic"},
        )
        (fold,) = in_domain_folds(real, seed, validation_fraction=0.2)
        fold.test, fold.masked_rows = test, masked
        try:
            records += evaluate_fold(
                fold,
                ["oracle", "best-single", IN_DOMAIN_ROUTER],
                SCENARIOS,
                seed,
                context={"suite": "local-real", "setting": "in-domain"},
            )
        except ValueError as err:  # too few real train rows (the tiny CI size)
            announce(f"in-domain {IN_DOMAIN_ROUTER} skipped for seed {seed}: {err}")
    return records


def run_cold_start(
    size: str | Size,
    out_dir: str | Path,
    pool: Any,
    client: Any,
    *,
    generator: str | None = None,
    judge: str | None = None,
    announce: Callable[[str], None] = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Run stages a-e with ``pool`` (already serving); returns and writes the results.

    Writes ``qa.jsonl``, ``labelled.jsonl``, ``real_answers.jsonl``, ``state.json``,
    ``results.json`` (records, summary rows, stage times) and ``table.md`` to ``out_dir``.
    """
    from trouter.data.labelled import load_labelled
    from trouter.evaluation.report import markdown_tables, summarise
    from trouter.labelling.run import LabelSettings, alabel
    from trouter.local.pool import DEFAULT_GENERATOR, DEFAULT_JUDGE
    from trouter.local.real_answers import answer_real_questions, load_real_questions, real_dataset

    spec = SIZES[size] if isinstance(size, str) else size
    generator = generator or spec.generator or DEFAULT_GENERATOR
    judge_endpoint = pool.get(judge or spec.generator or DEFAULT_JUDGE)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out / "state.json", announce)
    tick = progress.tick if progress is not None else (lambda *_: None)

    qa = stages.run(
        "synthesize", lambda: _synthesize(client, pool, generator, spec, out / "qa.jsonl", progress)
    )
    stages.counts["synthetic_questions"] = len(qa)
    if progress is not None:
        progress.start("label", len(qa))
    report = stages.run(
        "label",
        lambda: run_watched(
            alabel(
                client,
                list(pool.models),
                judge_endpoint,
                qa,
                out / "labelled.jsonl",
                LabelSettings(answer_max_tokens=ANSWER_MAX_TOKENS, questions_in_flight=1),
                on_update=lambda r: progress.set(r.written + r.already_done) if progress else None,
            )
        ),
    )
    if progress is not None:
        progress.set(report.written + report.already_done)
    stages.counts["label_masked_cells"] = report.masked_cells
    synthetic = load_labelled(out / "labelled.jsonl", seed=0).select_models(pool.names)
    questions = load_real_questions(spec.n_gsm8k, spec.n_humaneval)
    if progress is not None:
        progress.start("real questions", len(questions) * len(pool.models))
    answers = stages.run(
        "answer-real",
        lambda: run_watched(
            answer_real_questions(client, pool, questions, out / "real_answers.jsonl", tick)
        ),
    )
    real = real_dataset(questions, answers, pool)
    stages.counts.update(
        real_questions=len(questions),
        real_test=int((real.splits == "test").sum()),
        synthetic_mean_performance=dict(zip(pool.names, _means(synthetic), strict=True)),
        real_mean_performance=dict(zip(pool.names, _means(real), strict=True)),
    )
    records = stages.run("train+evaluate", lambda: _evaluate(synthetic, real, spec.seeds, announce))
    rows = summarise(records)
    table = markdown_tables(rows)
    result = {
        "size": asdict(spec),
        "stage_seconds": stages.seconds,
        "counts": stages.counts,
        "summary": rows,
        "records": [{k: v for k, v in r.items() if k != "curve"} for r in records],
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "table.md").write_text(_header(spec, stages) + table)
    stages.save()
    return result


def _means(dataset) -> list[float]:
    import numpy as np

    return [round(float(v), 3) for v in np.nanmean(dataset.performance, axis=0)]


def _header(spec: Size, stages: Stages) -> str:
    counts = stages.counts
    times = ", ".join(f"{k} {v:.0f} s" for k, v in stages.seconds.items())
    return (
        f"Local cold start: {counts.get('synthetic_questions')} synthetic questions "
        f"({spec.n_leaves} leaves), {counts.get('real_questions')} real questions "
        f"({spec.n_gsm8k} GSM8K + {spec.n_humaneval} HumanEval; {counts.get('real_test')} in "
        f"the test half). Mean real performance per model: "
        f"{counts.get('real_mean_performance')}; on the synthetic labels: "
        f"{counts.get('synthetic_mean_performance')}. Stage wall times: {times}.\n\n"
    )
