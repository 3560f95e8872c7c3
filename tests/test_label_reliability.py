"""`trouter label` / `synth qa` under abuse: two runs on one file, non-UTF-8 input, a full
disk, an unwritable cache, a tight --max-cost. Real GSM8K rows, the loopback stand-in."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from standin import StandIn
from test_labelling import (
    PRICES,
    ROOT,
    World,
    calls_to_label,
    gsm8k_rows,
    judge_calls,
    label_args,
    read_labelled,
    run_label,
    setup,  # noqa: F401  (fixture)
    write_pool,
)

import trouter.data.jsonl as jsonl
from trouter.data.output_lock import lock_paths
from trouter.labelling.run import LabelSettings, alabel
from trouter.llm.client import LLMClient
from trouter.llm.pool import Pool

N_BUDGET_QUESTIONS = 40


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-c", "from trouter.cli import app; app()", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


# ----- one writer per output file ---------------------------------------------------------
def test_second_label_run_on_the_same_file_refuses_at_once_and_nothing_is_paid_twice(setup):  # noqa: F811
    server, _world, questions, pool, out = setup
    server.latency_s = 0.1  # the first run takes a few seconds
    first = _spawn(label_args(questions, pool, out, "--concurrency", "1"))
    owner = lock_paths(out.resolve())[1]
    _wait_for(lambda: owner.exists() or first.poll() is not None)
    second = run_label(*label_args(questions, pool, out))
    assert second.exit_code == 2, second.output
    assert f"pid {first.pid}" in second.output and "another trouter run" in second.output
    assert first.wait(timeout=120) == 0, first.stderr.read().decode()
    ids = [row["id"] for row in read_labelled(out)]
    assert len(ids) == len(set(ids)) == 10
    assert server.calls == {"strong": 10, "weak": 10, "judge": judge_calls(10)}  # paid once
    # the lock is released with its holder: a third run resumes (nothing left to do)
    third = run_label(*label_args(questions, pool, out))
    assert third.exit_code == 0, third.output
    assert not owner.exists()


def test_synth_qa_refuses_a_file_another_process_is_writing(tmp_path: Path):
    out = tmp_path / "qa.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from trouter.data.output_lock import exclusive_output\n"
         f"with exclusive_output({str(out)!r}):\n"
         "    print('held', flush=True); time.sleep(60)"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == b"held"
        from typer.testing import CliRunner

        from trouter.cli import app

        result = CliRunner().invoke(
            app, ["synth", "qa", "--taxonomy", str(tmp_path / "never-read.json"),
                  "--pool", str(tmp_path / "never-read.yaml"), "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"pid {holder.pid}" in result.output and "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()


# ----- bad input files --------------------------------------------------------------------
def test_non_utf8_files_are_named_with_their_line(setup, tmp_path: Path):  # noqa: F811
    _server, _world, questions, pool, out = setup
    lines = questions.read_bytes().splitlines(keepends=True)
    bad_questions = tmp_path / "latin1-qa.jsonl"
    bad_questions.write_bytes(b"".join(lines[:2]) + '{"id": "caf\xe9"}\n'.encode("latin-1"))
    result = run_label(*label_args(bad_questions, pool, out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(r"latin1-qa.jsonl:3: not UTF-8 text \(byte 0xe9", result.output)

    bad_pool = tmp_path / "bad-pool.yaml"
    bad_pool.write_bytes(pool.read_bytes().replace(b"name: weak", b"name: we\xffak"))
    result = run_label(*label_args(questions, bad_pool, out))
    assert result.exit_code == 1 and re.search(r"bad-pool.yaml:\d+: not UTF-8", result.output)

    assert run_label(*label_args(questions, pool, out)).exit_code == 0
    labelled = out.read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(labelled[0] + labelled[1].replace(b"Working", b"Work\xc3\x28ing"))
    train = run_label("train", "--router", "best-single", "--train-file", str(damaged),
                      "--out", str(tmp_path / "r"))  # fmt: skip
    assert train.exit_code == 1 and "damaged.jsonl:2: not UTF-8 text" in train.output
    resume = run_label(*label_args(questions, pool, damaged))
    assert resume.exit_code == 1 and "damaged.jsonl:2: not UTF-8 text" in resume.output


# ----- a full disk -------------------------------------------------------------------------
def test_full_disk_gives_one_clean_error_no_torn_line_and_a_clean_resume(setup):  # noqa: F811
    server, _world, questions, pool, out = setup
    real_write, rows_before_full = os.write, 4
    state = {"rows": 0, "fd": None}

    def filling_disk(fd: int, data) -> int:
        if fd != state["fd"]:
            return real_write(fd, data)
        if state["rows"] < rows_before_full:
            state["rows"] += 1
            return real_write(fd, data)
        if state["rows"] == rows_before_full:  # the disk fills up half-way through a row
            state["rows"] += 1
            return real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_init = jsonl.JsonlAppender.__init__

    def init(self, path):
        real_init(self, path)
        state["fd"] = self._fd

    with pytest.MonkeyPatch.context() as disk:  # (the fixture's patches stay in place)
        disk.setattr(jsonl.JsonlAppender, "__init__", init)
        disk.setattr(jsonl.os, "write", filling_disk)
        result = run_label(*label_args(questions, pool, out, "--concurrency", "1"))
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert result.output.count("error:") == 1
    assert out.read_bytes().endswith(b"\n")  # no torn line
    assert len(read_labelled(out)) == rows_before_full
    calls = server.total_calls
    resumed = run_label(*label_args(questions, pool, out))
    assert resumed.exit_code == 0, resumed.output
    assert len(read_labelled(out)) == 10
    # the row that could not be written was answered from the cache: paid once
    assert server.total_calls - calls == calls_to_label(range(rows_before_full + 1, 10))


def test_a_full_cache_is_a_warning_and_no_paid_answer_is_lost(tmp_path, data_dir, caplog):
    rows = gsm8k_rows(data_dir, 10)
    with StandIn(models=list(PRICES), responder=World(rows)) as server:
        pool = Pool.load(write_pool(tmp_path / "pool.yaml", server))
        client = LLMClient(cache_dir=tmp_path / "cache", backoff_base_s=0.01)
        conn = client.cache._conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL, as on a full disk
        with caplog.at_level(logging.WARNING, logger="trouter.llm.cache"):
            report = asyncio.run(
                alabel(
                    client,
                    [pool.get("strong"), pool.get("weak")],
                    pool.get("judge"),
                    rows,
                    tmp_path / "out.jsonl",
                )  # fmt: skip
            )
        assert report.written == 10 and len(read_labelled(tmp_path / "out.jsonl")) == 10
        assert client.stats.cache_write_failures > 0
        assert server.total_calls == calls_to_label(range(10))
        assert any("could not be saved to the LLM cache" in note for note in report.notes)
        warnings = [r for r in caplog.records if "cannot write to the LLM cache" in r.message]
        assert len(warnings) == 1 and "full" in warnings[0].message


# ----- --max-cost --------------------------------------------------------------------------
def test_max_cost_spends_at_least_80_percent_and_never_more(tmp_path, data_dir, monkeypatch):
    rows = gsm8k_rows(data_dir, N_BUDGET_QUESTIONS)
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with StandIn(models=list(PRICES), responder=World(rows)) as server:
        pool = write_pool(tmp_path / "pool.yaml", server)
        monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache-full"))
        full = run_label(*label_args(questions, pool, tmp_path / "full.jsonl"))
        assert full.exit_code == 0, full.output
        total = float(re.search(r"calls \(0 from cache\), \$([\d.]+)", full.output).group(1))
        for share in (0.25, 0.6):
            limit = round(total * share, 6)
            monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / f"cache-{share}"))
            out = tmp_path / f"budget-{share}.jsonl"
            # --answer-max-tokens 64: one call's worst case (what is reserved for it) is under
            # 20% of the ceiling, the condition for spending >= 80% of it (labelling/budget.py)
            args = label_args(
                questions, pool, out, "--max-cost", str(limit), "--answer-max-tokens", "64"
            )  # default --concurrency 8
            stopped = run_label(*args)  # fmt: skip
            assert stopped.exit_code == 3, stopped.output
            in_rows = sum(
                (c["cost_usd"] or 0) + (c.get("judge_cost_usd") or 0)
                for r in read_labelled(out) for c in r["results"].values()
            )  # fmt: skip
            spent = float(re.search(r"spent \$([\d.]+)", stopped.output).group(1))
            assert in_rows <= spent + 1e-6 and spent <= limit, (share, in_rows, spent, limit)
            assert spent >= 0.8 * limit, (share, spent, limit)
            assert in_rows >= 0.7 * limit  # the money went into written rows


@pytest.mark.parametrize("weak_delay_s", [0.0, 0.5])
def test_identical_answers_share_one_verdict_and_the_rows_cost_what_was_spent(
    tmp_path, data_dir, weak_delay_s
):
    """Question 0: weak gives strong's answer word for word; question 1: a different one.
    When weak was slow, strong's verdict used to be cached by the time weak's identical one
    was asked: a free cache hit whose cost the row still recorded (rows > spent)."""
    rows = gsm8k_rows(data_dir, 2)
    with StandIn(models=list(PRICES), responder=World(rows)) as server:
        pool = Pool.load(write_pool(tmp_path / "pool.yaml", server))
        server.hang_next(2, weak_delay_s, model="weak")  # weak answers after strong is judged
        client = LLMClient(cache_dir=tmp_path / "cache")
        settings = LabelSettings(max_cost_usd=1.0)
        report = asyncio.run(
            alabel(client, [pool.get("strong"), pool.get("weak")], pool.get("judge"), rows,
                   tmp_path / "out.jsonl", settings)
        )  # fmt: skip
        calls = dict(server.calls)
    labelled = read_labelled(tmp_path / "out.jsonl")
    in_rows = sum(
        c["cost_usd"] + c["judge_cost_usd"] for r in labelled for c in r["results"].values()
    )
    assert in_rows == pytest.approx(report.spent_usd, rel=1e-12)
    assert calls == {"strong": 2, "weak": 2, "judge": 3}  # one verdict per distinct answer
    assert report.calls == 7 and report.cached_calls == 0
    shared = next(r for r in labelled if r["id"] == "gsm8k-train-0")["results"]
    assert shared["strong"]["answer"] == shared["weak"]["answer"]
    assert shared["strong"]["performance"] == shared["weak"]["performance"] == 1.0
    assert shared["strong"]["judge_cost_usd"] == shared["weak"]["judge_cost_usd"] > 0


# ----- torn lines are repaired *and reported* ------------------------------------------------
def test_label_reports_the_torn_line_it_repairs(setup):  # noqa: F811
    _server, _world, questions, pool, out = setup
    first = questions.read_text().splitlines()[0]
    out.write_text(first[: len(first) // 2])  # what a kill mid-write leaves
    result = run_label(*label_args(questions, pool, out))
    assert result.exit_code == 0, result.output
    assert "cut a torn last line off" in result.output
    assert len(read_labelled(out)) == 10


def test_qa_and_taxonomy_files_name_bad_bytes_and_torn_tails(tmp_path: Path):
    from trouter.synthesis.qa import QAFileError, read_qa_rows
    from trouter.taxonomy.model import Taxonomy, TaxonomyError

    qa = tmp_path / "qa.jsonl"
    row = {"id": "a", "question": "q?", "leaf_id": "L", "reference": "r", "generator": "g"}
    qa.write_bytes((json.dumps(row) + "\n").encode() + b'{"id": "b", "quest')
    rows, torn = read_qa_rows(qa)
    assert torn and len(rows) == 1 and qa.read_bytes().endswith(b"\n")
    qa.write_bytes((json.dumps(row) + "\n").encode() + b'{"id": "\xff"}\n')
    with pytest.raises(QAFileError, match=r"qa.jsonl:2: not UTF-8 text \(byte 0xff"):
        read_qa_rows(qa)
    taxonomy = tmp_path / "taxonomy.json"
    taxonomy.write_bytes(b'{\n  "name": "caf\xe9"\n}\n')
    with pytest.raises(TaxonomyError, match=r"taxonomy.json:2: not UTF-8 text \(byte 0xe9"):
        Taxonomy.load(taxonomy)
