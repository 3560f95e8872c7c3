"""Property tests of the file loaders: any bytes in gives a valid result or the loader's own
error type (one clear message), never another exception. Plus the bounds on input size.

Bounded: each property runs at most ``EXAMPLES`` examples with a per-example deadline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from trouter.config import MalformedDataError, TrouterError
from trouter.data.dataset import RoutingDataset
from trouter.data.jsonl import MAX_LINE_BYTES, complete_objects, iter_json_objects, read_text
from trouter.data.labelled import MAX_QUESTION_CHARS, load_labelled, read_labelled
from trouter.llm.pool import Pool, PoolConfigError

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=10_000,  # a 5,000-deep YAML takes PyYAML about 3 s to refuse
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# huge integers, beyond a float (Hypothesis cannot shrink ints over 4,300 digits: see @example)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**308, 10**4000) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip

result_cells = st.fixed_dictionaries(
    {},
    optional={
        "performance": json_values | st.floats(0, 1),
        "cost_usd": json_values | st.floats(0, 1),
        "input_tokens": json_values | st.integers(0, 10),
        "latency_s": json_values,
        "answer": json_values,
    },
)
labelled_rows = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=4) | json_values,
        "question": st.text(max_size=30) | json_values,
        "reference": st.text(max_size=10) | json_values,
        "leaf_id": st.sampled_from(["", None, "Mathematics > Algebra"]) | json_values,
        "generator": st.just("g") | json_values,
        "results": st.dictionaries(st.sampled_from(["a", "b", "c"]), result_cells, max_size=3)
        | json_values,
        "benchmark": st.text(max_size=5) | json_values,
    },
)

# well-formed rows with odd values, so that the property also reaches the dataset building
valid_rows = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=6),
        "question": st.text(max_size=30),
        "reference": st.text(max_size=5),
        "leaf_id": st.sampled_from(["", "Mathematics > Algebra", "Science > x"]),
        "generator": st.text(max_size=3),
        "results": st.dictionaries(
            st.text(max_size=3),
            st.fixed_dictionaries(
                {
                    "performance": st.none() | st.floats(0, 1),
                    "cost_usd": st.none() | st.floats(0, 10),
                }
            ),  # fmt: skip
            max_size=3,
        ),
    },
    optional={"benchmark": st.text(max_size=5), "task": st.text(max_size=5)},
)


def _lines(rows: list, junk: bytes) -> bytes:
    return b"\n".join(json.dumps(r, allow_nan=True).encode() for r in rows) + junk


def _write(folder: Path, data: bytes) -> Path:
    path = folder / "input.jsonl"
    path.write_bytes(data)
    return path


@FUZZ
@given(st.binary(max_size=400))
@example(b'{"a": 1}\n\xff\n')
@example(b"[" * 5000)
@example(b'{"a": NaN}\r\n{"b": 1e999}\n\n')
def test_jsonl_readers_accept_any_bytes(tmp_path, data):
    path = _write(tmp_path, data)
    for read in (lambda: list(iter_json_objects(path)),
                 lambda: complete_objects(path, repair=False)[0],
                 lambda: [read_text(path, "file", max_bytes=200)]):  # fmt: skip
        try:
            result = read()
        except MalformedDataError:
            continue
        assert isinstance(result, list)


@FUZZ
@given(st.lists(valid_rows | labelled_rows, max_size=6), st.binary(max_size=20))
@example([{"id": "1", "question": "q", "reference": "r", "leaf_id": "", "generator": "g",
           "results": {"a": {"performance": 1.0, "cost_usd": 0.1}}}], b"")  # fmt: skip
# found by this test: an int too large for a float escaped as OverflowError
@example([{"id": "1", "question": "q", "reference": "r", "leaf_id": "", "generator": "g",
           "results": {"a": {"performance": 1, "cost_usd": 10**400}}}], b"")  # fmt: skip
def test_labelled_loader_gives_a_dataset_or_a_trouter_error(tmp_path, rows, junk):
    path = _write(tmp_path, _lines(rows, junk))
    try:
        data = load_labelled(path)
    except TrouterError:
        event("refused with a trouter error")
        return
    event("loaded")
    assert isinstance(data, RoutingDataset)
    assert data.performance.shape == (len(data.texts), len(data.models))
    observed = data.performance[~np.isnan(data.performance)]
    assert ((observed >= 0) & (observed <= 1)).all()


pool_entries = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=6) | json_values,
        "litellm_model": st.sampled_from(["openai/gpt-4o-mini", "x/y", ""]) | json_values,
        "api_base": st.just("http://127.0.0.1:1/v1") | json_values,
        "api_key_env": st.sampled_from(["OPENAI_API_KEY", "sk-123", "1X"]) | json_values,
        "input_price_per_mtok": st.floats() | json_values,
        "output_price_per_mtok": st.floats(0, 10) | json_values,
        "routes_as": st.text(max_size=5) | json_values,
        "capabilities": st.dictionaries(st.sampled_from(["vision", "tools", "x"]), json_values)
        | json_values,
    },
)
pool_documents = (
    st.fixed_dictionaries(
        {},
        optional={"models": st.lists(pool_entries, max_size=4) | json_values, "extra": json_values},
    )  # fmt: skip
    | json_values
)


def _load_pool(folder: Path, data: bytes) -> None:
    path = _write(folder, data)
    try:
        pool = Pool.load(path)
    except PoolConfigError as err:
        assert str(err)
        return
    assert pool.names and len(set(pool.names)) == len(pool.names)


@FUZZ
@given(st.binary(max_size=300))
@example(b"models: &a [*a]\n")
@example(b"!!python/object:os.system {}\n")
@example(b"models:\n - name: a\n   litellm_model: x\n - name: a\n   litellm_model: y\n")
# found by this test: YAML nested deeper than the parser's recursion raised RecursionError
@example(b"[" * 5000)
@example(b"- " * 5000 + b"x")
@example(b"{a: " * 3000)
def test_pool_loader_takes_any_bytes(tmp_path, data):
    _load_pool(tmp_path, data)


@FUZZ
@given(pool_documents)
def test_pool_loader_takes_any_yaml_document(tmp_path, document):
    _load_pool(tmp_path, yaml.safe_dump(document, allow_unicode=True).encode())


def test_an_integer_of_too_many_digits_is_named_by_file_and_line(tmp_path):
    # found by the fuzz pass: json.loads raised a bare ValueError past 4,300 digits
    path = _write(tmp_path, b'{"id": "1", "n": ' + b"9" * 5000 + b"}\n")
    with pytest.raises(MalformedDataError, match=r"input.jsonl:1: not usable JSON"):
        read_labelled(path)


# ----- size bounds -------------------------------------------------------------------------
ROW = {"id": "1", "question": "q", "reference": "r", "leaf_id": "", "generator": "g",
       "results": {"a": {"performance": 1.0, "cost_usd": 0.001}}}  # fmt: skip


def test_a_line_over_the_limit_is_refused_by_file_and_line(tmp_path):
    path = tmp_path / "labelled.jsonl"
    huge = dict(ROW, id="2", question="x" * (MAX_LINE_BYTES + 10))
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(huge) + "\n", encoding="utf-8")
    with pytest.raises(MalformedDataError, match=rf"{path}:2: line longer than 16,777,216"):
        read_labelled(path)


def test_an_oversized_question_is_cut_for_training_with_its_file_and_line(tmp_path, caplog):
    path = tmp_path / "labelled.jsonl"
    long_row = dict(ROW, id="2", question="y" * (MAX_QUESTION_CHARS * 3))
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(long_row) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        data = load_labelled(path)
    assert [len(t) for t in data.texts] == [1, MAX_QUESTION_CHARS]
    assert f"{path}:2: question of 300,000 characters cut" in caplog.text


def test_train_refuses_a_huge_row_in_one_message(tmp_path):
    from typer.testing import CliRunner

    from trouter.cli import app

    path = tmp_path / "labelled.jsonl"
    huge = dict(ROW, id="2", question="z" * (MAX_LINE_BYTES + 1))
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(huge) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["train", "--train-file", str(path), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{path}:2: line longer than" in " ".join(result.output.split())


def test_a_pool_file_that_never_ends_is_refused(tmp_path):
    link = tmp_path / "pool.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(MalformedDataError, match="larger than 1,000 bytes"):
        read_text(link, "pool file", max_bytes=1000)
    with pytest.raises(PoolConfigError, match="larger than"):
        Pool.load(link)
