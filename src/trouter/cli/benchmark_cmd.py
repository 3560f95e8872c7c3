"""`trouter experiment local-pool`: build (or resume) the local-pool routing benchmark.

Long-running by design (hours on a 2-core CPU): every stage appends its rows as they
complete and resumes from them, so it can run in the background and be stopped and
restarted at any point.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from trouter.cli.errors import fail
from trouter.cli.options import comma_list
from trouter.cli.progress import stage_bars

console = Console(stderr=True)


def local_pool(
    stage: str = typer.Argument(
        ...,
        help="real (answer + grade real questions) | synthetic (generate + answer) | "
        "export (rewrite the labelled files) | eval (train on synthetic, test on real)",
    ),
    out: Path = typer.Option(Path("results/local-pool"), "--out", help="Release folder."),
    pool: Path | None = typer.Option(
        None, "--pool", help="Running servers (pool YAML); default: start the offline pool."
    ),
    in_flight: int = typer.Option(1, "--in-flight", min=1, help="Calls in flight at once."),
    n_gsm8k: int = typer.Option(236, "--gsm8k", min=0, help="GSM8K test questions."),
    n_humaneval: int = typer.Option(164, "--humaneval", min=0, help="HumanEval problems."),
    n_choice: int = typer.Option(
        100,
        "--choice",
        min=0,
        help="Questions of each four-option set (MMLU, OpenBookQA; needs the llmrouter data).",
    ),
    per_leaf: int = typer.Option(16, "--per-leaf", min=1, help="Synthetic questions per leaf."),
    formats: str = typer.Option(
        "", "--formats", help="Grow only the leaves of these answer formats (number,code,choice)."
    ),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Evaluation seeds 0..N-1."),
    routers: str = typer.Option(
        "", "--routers", help="Routers trained on the synthetic rows (default: all learned)."
    ),
    shots: str = typer.Option("0,10,25,50,100", "--shots", help="Real rows added (few-shot)."),
) -> None:
    """Build the local-pool benchmark release; resumable at any point."""
    from trouter.local.benchmark import build_real, export_real, interleaved_real_questions
    from trouter.local.pool import DEFAULT_GENERATOR, make_client, resolve_pool
    from trouter.local.server import run_watched
    from trouter.local.synthetic import build_synthetic, export_synthetic, release_leaf_ids
    from trouter.taxonomy.model import Taxonomy

    if stage == "eval":
        try:
            shot_list = [int(k) for k in comma_list(shots)]
        except ValueError:
            raise fail(f"--shots {shots!r}: give numbers like 0,10,25") from None
        from trouter.local.pool_eval import SYNTHETIC_ROUTERS

        chosen = comma_list(routers) or list(SYNTHETIC_ROUTERS)
        _evaluate(out, seeds, chosen, shot_list)
        return
    if stage == "export":
        counts = export_real(out, n_gsm8k, n_humaneval, n_choice)
        synthetic = export_synthetic(out, DEFAULT_GENERATOR, counts["models"])
        console.print(
            f"real.jsonl: {counts['complete_rows']} complete rows; synthetic.jsonl: "
            f"{synthetic} complete rows",
            highlight=False,
        )
        return
    if stage not in ("real", "synthetic"):
        raise fail(f"unknown stage {stage!r}; choose real, synthetic, export")
    try:
        wanted = comma_list(formats) or None
        leaf_ids = release_leaf_ids(Taxonomy.default(), wanted)
    except ValueError as err:
        raise fail(f"--formats {formats!r}: {err}") from None
    # read the questions before any server starts: a missing data file fails at once
    real = interleaved_real_questions(n_gsm8k, n_humaneval, n_choice) if stage == "real" else []
    with resolve_pool(pool) as running_pool, stage_bars(console) as bars:
        client = make_client(running_pool)
        if stage == "real":
            task = bars.add_task("real questions", total=len(real) * len(running_pool.models))
            counts = run_watched(
                build_real(client, running_pool, out, real, in_flight=in_flight,
                           on_answer=lambda: bars.advance(task))
            )  # fmt: skip
        else:
            counts = run_watched(
                build_synthetic(client, running_pool, DEFAULT_GENERATOR, Taxonomy.default(), out,
                                per_leaf=per_leaf, in_flight=in_flight, leaf_ids=leaf_ids,
                                announce=lambda text: bars.console.print(text, highlight=False))
            )  # fmt: skip
    console.print(f"{stage}: {counts}", highlight=False)


def _evaluate(out: Path, seeds: int, routers: list[str], shots: list[int]) -> None:
    """Run the evaluation, write ``results.json`` and ``table.md``, print the table."""
    import json

    from rich.markdown import Markdown

    from trouter.evaluation.report import compact_markdown, learning_curve_markdown, summarise
    from trouter.local.pool_eval import evaluate_release

    records = evaluate_release(
        out,
        seeds=range(seeds),
        shots=shots,
        on_fold=lambda text: console.print(text, highlight=False),
        routers=routers,
    )
    rows = summarise(records)
    table = compact_markdown(rows) + "\n" + learning_curve_markdown(rows)
    slim = [{k: v for k, v in r.items() if k != "curve"} for r in records]
    (out / "results.json").write_text(json.dumps({"summary": rows, "records": slim}, indent=1))
    (out / "table.md").write_text(table)
    console.print(Markdown(table))


def register(experiment_app: typer.Typer) -> None:
    experiment_app.command("local-pool")(local_pool)
