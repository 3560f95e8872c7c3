"""Router directories are data, not code: safetensors + JSON, checksummed, never unpickled."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from slices import routerbench_slices
from typer.testing import CliRunner

import trouter
from trouter.cli import app
from trouter.routers import Router, make_router
from trouter.routers.persistence import RouterFileError, join_state, split_state

SRC = Path(__file__).resolve().parents[1] / "src" / "trouter"
REFERENCE = ("best-single", "cheapest", "random", "oracle")


@pytest.fixture(scope="module")
def bench(data_dir: Path):
    return routerbench_slices(train=40, validation=10, test=10)


@pytest.fixture()
def saved(bench, tmp_path: Path) -> Path:
    router = make_router("knn", k=5, weighting="uniform").fit(bench["train"], bench["validation"])
    return router.save(tmp_path / "knn")


class _RunsCode:
    """What a hostile state.pkl holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_directory_holds_json_and_safetensors_with_version_encoder_pool_checksums(saved, bench):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["router.json", "state.json", "weights.safetensors"]
    meta = json.loads((saved / "router.json").read_text())
    assert meta["format"] == "trouter-router" and meta["format_version"] == 1
    assert meta["trouter_version"] == trouter.__version__
    assert meta["router"] == "knn" and meta["encoder"] == "static"  # knn's default encoder
    assert meta["models"] == Router.load(saved).models_ and len(meta["models"]) == 11
    for name, digest in meta["files"].items():
        assert hashlib.sha256((saved / name).read_bytes()).hexdigest() == digest
    # the weights are plain safetensors, readable without trouter
    from safetensors.numpy import load_file

    weights = load_file(saved / "weights.safetensors")
    rows = len(bench["train"]) + len(bench["validation"])  # knn's index after the refit
    assert weights["index_x_"].shape == (rows, 256)  # the static encoder is 256-d
    assert weights["index_mask_"].dtype == bool


def test_a_crafted_pickle_is_never_run(saved, tmp_path: Path):
    marker = tmp_path / "pwned"
    meta = json.loads((saved / "router.json").read_text())
    old_style = {"router": "knn", "seed": 0, "params": meta["params"], "models": meta["models"]}
    (saved / "router.json").write_text(json.dumps(old_style))
    (saved / "state.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(RouterFileError, match="state.pkl from an older trouter"):
        Router.load(saved)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "named", "message"),
    [
        (lambda d: _truncate(d / "router.json"), "router.json", "not valid JSON"),
        (lambda d: _truncate(d / "state.json"), "state.json", "SHA-256"),
        (lambda d: _truncate(d / "weights.safetensors"), "weights.safetensors", "SHA-256"),
        (lambda d: _flip_byte(d / "weights.safetensors"), "weights.safetensors", "SHA-256"),
        (lambda d: (d / "state.json").unlink(), "state.json", "is missing"),
        (lambda d: (d / "router.json").write_text('{"hello": 1}'), "router.json", "not a trouter"),
        (lambda d: (d / "router.json").write_bytes(b"\xff\xfe\x00"), "router.json", "not UTF-8"),
        (lambda d: _edit_meta(d, format_version=99), "router.json", "version 99"),
        (lambda d: _edit_meta(d, router="nope"), "router.json", "unknown router"),
        (lambda d: _edit_meta(d, params={"k": "x", "bogus": 1}), "router.json", "parameters"),
    ],
)
def test_damaged_or_foreign_files_are_refused_naming_the_file(saved, damage, named, message):
    damage(saved)
    with pytest.raises(RouterFileError, match=message) as err:
        Router.load(saved)
    assert str(saved / named) in str(err.value)


def test_a_consistent_but_foreign_state_is_refused(saved, tmp_path: Path):
    """Files swapped in from a different router type, with matching checksums."""
    other = make_router("best-single").fit(*_two(routerbench_slices(10, 3, 3)))
    other_dir = other.save(tmp_path / "other")
    for name in ("state.json", "weights.safetensors"):
        (saved / name).write_bytes((other_dir / name).read_bytes())
    _edit_meta(saved, files=json.loads((other_dir / "router.json").read_text())["files"])
    with pytest.raises(RouterFileError, match="state of router 'best-single'.*says 'knn'"):
        Router.load(saved)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_routers_round_trip(bench, name, tmp_path: Path):
    router = make_router(name, seed=3).fit(bench["train"], bench["validation"])
    loaded = Router.load(router.save(tmp_path / name))
    assert type(loaded) is type(router) and loaded.seed == 3
    before, after = router.predict(bench["test"]), loaded.predict(bench["test"])
    np.testing.assert_array_equal(before.performance, after.performance)
    np.testing.assert_array_equal(before.cost, after.cost)


def test_state_splitting_keeps_arrays_tensors_and_json_and_refuses_objects():
    import torch

    state = {
        "a_": np.arange(6, dtype=np.float32).reshape(2, 3),
        "nested_": {"t": torch.ones(2, dtype=torch.float64), "xs": [np.int64(4), 0.5, None]},
        "loss_": float("nan"),
    }
    tree, arrays = split_state(state)
    assert set(arrays) == {"a_", "nested_/t"}
    back = join_state(json.loads(json.dumps(tree)), arrays)
    np.testing.assert_array_equal(back["a_"], state["a_"])
    assert isinstance(back["nested_"]["t"], torch.Tensor)
    assert back["nested_"]["xs"] == [4, 0.5, None] and np.isnan(back["loss_"])
    with pytest.raises(TypeError, match="/bad_: a object cannot be saved"):
        split_state({"bad_": object()})
    with pytest.raises(TypeError, match="dtype"):
        split_state({"text_": np.array(["a", "b"], dtype=object)})


def test_cli_route_on_a_damaged_router_exits_2_naming_the_file(saved):
    _truncate(saved / "weights.safetensors")
    result = CliRunner().invoke(app, ["route", "hello", "--model-dir", str(saved)])
    assert result.exit_code == 2, result.output
    assert "weights.safetensors" in result.output and "Traceback" not in result.output


def test_serve_and_trouter_load_on_a_damaged_router_name_the_file(saved, tmp_path: Path):
    (saved / "router.json").write_text((saved / "router.json").read_text()[:40])
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n  - name: m\n    litellm_model: openai/m\n")
    result = CliRunner().invoke(app, ["serve", "--model-dir", str(saved), "--pool", str(pool)])
    assert result.exit_code == 2, result.output
    assert "router.json: not valid JSON" in result.output and "Traceback" not in result.output
    with pytest.raises(RouterFileError, match="router.json: not valid JSON"):
        trouter.load(saved)


def test_no_pickle_or_torch_load_in_the_package():
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bimport pickle\b|\bpickle\.loads?\(|\btorch\.load\(|cloudpickle", line)
    ]
    assert offenders == []


# ----- helpers ---------------------------------------------------------------------------
def _two(slices):
    return slices["train"], slices["validation"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_meta(directory: Path, **changes) -> None:
    meta = json.loads((directory / "router.json").read_text())
    meta.update(changes)
    (directory / "router.json").write_text(json.dumps(meta))
