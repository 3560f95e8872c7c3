"""The command line's surface: version, -h, flags shown as flags, an example under every
command's help, readable `trouter routers`, pool-aware defaults, and research commands kept
apart from the user's."""

from __future__ import annotations

import json
import shlex
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.main
import yaml
from standin import standin  # noqa: F401
from typer.testing import CliRunner

from trouter.cli import app
from trouter.cli.surface import EXAMPLES, first_sentence

runner = CliRunner()


def _invoke(*args: str, columns: int = 100):
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


def _command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [()]

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            paths.append((*path, name))
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def test_version_and_short_help():
    result = _invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"trouter {version('trouter')}"
    for args in (["-h"], ["synth", "qa", "-h"], ["experiment", "local-pool", "-h"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and "Usage:" in result.output, args


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "trouter")
def test_help_shows_flags_as_flags_and_an_example(path):
    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output  # a flag takes no value
    assert "Example" in result.output


@pytest.mark.parametrize("path", sorted(EXAMPLES), ids=lambda p: p or "trouter")
def test_every_example_parses_with_the_options_it_shows(path):
    """Each example is a valid command line for its command (parsed, not run)."""
    root = typer.main.get_command(app)
    for example in EXAMPLES[path]:
        words = shlex.split(example)
        assert words[0] == "trouter"
        command, context, args = root, None, words[1:]
        context = root.make_context("trouter", list(args), resilient_parsing=True)
        while getattr(command, "commands", None) and args and args[0] in command.commands:
            name, args = args[0], args[1:]
            command = command.commands[name]
            context = command.make_context(name, list(args), parent=context)
        assert context.command is command, example


def test_routers_shows_first_full_sentences_without_markup():
    result = _invoke("routers", columns=400)
    assert result.exit_code == 0
    from trouter.routers import ROUTERS

    lines = result.output.splitlines()
    assert len(lines) == len(ROUTERS)
    for line in lines:
        name, text = line.split(maxsplit=1)
        assert text == first_sentence(ROUTERS[name].__doc__)
        assert text.endswith((".", "!", "?")), line
        assert not any(mark in text for mark in (":data:`", ":class:`", "``", "*")), line


def test_first_sentence_strips_roles_and_keeps_abbreviations():
    doc = """The guard over *fast* members (see :data:`AUTO_MEMBERS`), e.g. ``knn``,
    so it picks :class:`~trouter.routers.knn.KNNRouter` per cell. Then more.

    Details."""
    assert first_sentence(doc) == (
        "The guard over fast members (see AUTO_MEMBERS), e.g. knn, so it picks KNNRouter per cell."
    )


def test_research_commands_stay_out_of_the_first_screen():
    lines = _invoke("--help").output.splitlines()
    first_screen = "\n".join(lines[:24])
    assert "experiment" not in first_screen
    rows = [line.strip("│ ").split(" ", 1)[0] for line in lines]
    assert "local-pool" not in rows and "local-cold-start" not in rows  # not top-level
    assert any("─ Research ─" in line for line in lines)
    experiment_rows = [line.strip("│ ").split(" ", 1)[0] for line in
                       _invoke("experiment", "--help").output.splitlines()]  # fmt: skip
    assert {"local-pool", "local-cold-start"} <= set(experiment_rows)


# ----- defaults from the user's pool --------------------------------------------------------
def _pool_file(tmp_path: Path, base_url: str, prices: dict[str, float]) -> Path:
    models = [
        {"name": name, "litellm_model": f"openai/{name}", "api_base": base_url,
         "input_price_per_mtok": price, "output_price_per_mtok": price}
        for name, price in prices.items()
    ]  # fmt: skip
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def _questions(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    leaf = "Mathematics > Arithmetic Word Problems > Easy"
    row = {"id": "q1", "question": "What is 2+3?", "reference": "5", "leaf_id": leaf,
           "generator": "x"}  # fmt: skip
    path.write_text(json.dumps(row) + "\n")
    return path


def test_label_and_synth_default_to_the_pools_most_expensive_model(standin, tmp_path):  # noqa: F811
    pool = _pool_file(tmp_path, standin.base_url, {"small": 0.1, "large": 2.0})
    label = _invoke("label", "--questions", str(_questions(tmp_path)), "--pool", str(pool),
                    "--out", str(tmp_path / "labelled.jsonl"), "--dry-run")  # fmt: skip
    assert label.exit_code == 0, label.output
    assert "judge large" in label.output
    qa = _invoke("synth", "qa", "--taxonomy", "default", "--pool", str(pool),
                 "--out", str(tmp_path / "out.jsonl"), "--dry-run")  # fmt: skip
    assert qa.exit_code == 0, qa.output
    taxonomy = _invoke("synth", "taxonomy", "--pool", str(pool), "--out",
                       str(tmp_path / "t.json"), "--dry-run")  # fmt: skip
    assert taxonomy.exit_code == 0, taxonomy.output
    assert standin.total_calls == 0  # dry runs


def test_an_ambiguous_pool_default_names_the_option_to_give(standin, tmp_path):  # noqa: F811
    pool = _pool_file(tmp_path, standin.base_url, {"a": 1.0, "b": 1.0})
    qa = _invoke("synth", "qa", "--taxonomy", "default", "--pool", str(pool),
                 "--out", str(tmp_path / "out.jsonl"), "--dry-run")  # fmt: skip
    assert qa.exit_code == 2 and "Traceback" not in qa.output
    text = " ".join(qa.output.split())
    assert "a and b share the highest output price" in text and "--generator NAME" in text
    label = _invoke("label", "--questions", str(_questions(tmp_path)), "--pool", str(pool),
                    "--out", str(tmp_path / "labelled.jsonl"), "--dry-run")  # fmt: skip
    assert label.exit_code == 2 and "--judge NAME" in " ".join(label.output.split())


def test_synth_qa_default_taxonomy_is_the_packaged_one(standin, tmp_path):  # noqa: F811
    from trouter.taxonomy.model import Taxonomy

    pool = _pool_file(tmp_path, standin.base_url, {"only": 0.5})
    qa = _invoke("synth", "qa", "--taxonomy", "default", "--pool", str(pool),
                 "--out", str(tmp_path / "out.jsonl"), "--dry-run", "--per-leaf", "1",
                 "--per-call", "1")  # fmt: skip
    assert qa.exit_code == 0, qa.output
    leaves = len(Taxonomy.default().leaf_ids())  # one call per leaf at the least
    assert f"QA synthesis: {leaves}-" in qa.output


def test_a_failed_synth_taxonomy_names_no_progress_file_that_does_not_exist(standin, tmp_path):  # noqa: F811
    pool = _pool_file(tmp_path, standin.base_url, {"gen": 1.0})
    standin.fail_next(50, status=400)  # not retryable: the first call fails for good
    out = tmp_path / "taxonomy.json"
    result = _invoke("synth", "taxonomy", "--pool", str(pool), "--out", str(out),
                     "--domain", "Law: questions about statutes")  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    progress = out.with_name(out.name + ".progress.json")
    assert not progress.exists()
    assert ".progress.json" not in result.output
