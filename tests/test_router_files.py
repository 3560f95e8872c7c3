"""Router directories are data, not code: safetensors + JSON, checksummed, never unpickled."""

from __future__ import annotations

import hashlib
import json
import os
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
from trouter.routers.persistence import SIZE_CAPS, RouterFileError, join_state, split_state

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
    assert names == ["encoder", "router.json", "state.json", "weights.safetensors"]
    meta = json.loads((saved / "router.json").read_text())
    assert meta["format"] == "trouter-router" and meta["format_version"] == 2
    # the static encoder travels with the router: serving never distils it (which needs torch)
    assert {"encoder/model.safetensors", "encoder/tokenizer.json"} <= set(meta["files"])
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


# ----- hostile directories: links, devices, FIFOs, sizes, nesting, shapes -------------------
def test_a_state_file_linked_to_dev_zero_is_refused_before_reading(saved):
    (saved / "state.json").unlink()
    (saved / "state.json").symlink_to("/dev/zero")
    with pytest.raises(RouterFileError, match="state.json is a symbolic link"):
        Router.load(saved)


def test_a_fifo_is_refused_without_waiting_for_a_writer(saved):
    (saved / "weights.safetensors").unlink()
    os.mkfifo(saved / "weights.safetensors")
    with pytest.raises(RouterFileError, match="weights.safetensors is not a regular file"):
        Router.load(saved)


def test_an_oversized_file_is_refused_before_it_is_read(saved):
    with open(saved / "state.json", "r+b") as handle:  # sparse: no disk is used
        handle.truncate(SIZE_CAPS["state.json"] + 1)
    with pytest.raises(RouterFileError, match="state.json is 268,435,457 bytes, more than"):
        Router.load(saved)


@pytest.mark.parametrize(
    ("depth", "message"), [(100_000, "deeper than the parser"), (80, "more than 64 levels")]
)
def test_deeply_nested_state_json_is_a_router_file_error(saved, depth, message):
    document = '{"router": "knn", "state": {"x": ' + "[" * depth + "]" * depth + "}}"
    _replace_file(saved, "state.json", document.encode())
    with pytest.raises(RouterFileError, match=f"state.json: JSON nested {message}"):
        Router.load(saved)


def test_an_array_of_the_wrong_shape_is_refused_at_load_not_at_first_route(saved):
    from safetensors.numpy import load_file, save

    arrays = load_file(saved / "weights.safetensors")
    arrays["index_x_"] = np.ascontiguousarray(arrays["index_x_"][:, :200])  # 256-d encoder
    _replace_file(saved, "weights.safetensors", save(arrays, metadata={"format": "trouter-router"}))
    with pytest.raises(RouterFileError, match="do not fit router 'knn'.*stand-in query") as err:
        Router.load(saved)
    assert str(saved) in str(err.value)


def test_mlp_weights_of_the_wrong_shape_are_refused_at_load(bench, tmp_path: Path):
    from safetensors.numpy import load_file, save

    router = make_router("mlp", hidden=[8], weight_decay=[1e-2], max_epochs=2)
    saved = router.fit(bench["train"], bench["validation"]).save(tmp_path / "mlp")
    arrays = load_file(saved / "weights.safetensors")
    key = "net_weights/cost/heads.weight"
    arrays[key] = np.ascontiguousarray(arrays[key][:-1])  # one model short
    _replace_file(saved, "weights.safetensors", save(arrays))
    with pytest.raises(RouterFileError, match="cost network's weights"):
        Router.load(saved)


@pytest.mark.parametrize("name", ["../state.json", "/etc/passwd", "encoder/../x", "extra.bin"])
def test_a_files_table_naming_other_paths_is_refused(saved, name):
    meta = json.loads((saved / "router.json").read_text())
    _edit_meta(saved, files={**meta["files"], name: "0" * 64})
    with pytest.raises(RouterFileError, match="lists a file a router directory never holds"):
        Router.load(saved)


def test_a_linked_or_edited_encoder_copy_is_refused(saved, tmp_path: Path):
    encoder = saved / "encoder"
    moved = tmp_path / "elsewhere"
    encoder.rename(moved)
    encoder.symlink_to(moved)
    with pytest.raises(RouterFileError, match="encoder is not a directory"):
        Router.load(saved)
    encoder.unlink()
    moved.rename(encoder)
    _flip_byte(encoder / "tokenizer.json")
    with pytest.raises(RouterFileError, match="tokenizer.json does not match the SHA-256"):
        Router.load(saved)


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


def _replace_file(directory: Path, name: str, data: bytes) -> None:
    """New contents with a matching checksum: only the content checks can refuse it."""
    (directory / name).write_bytes(data)
    meta = json.loads((directory / "router.json").read_text())
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    (directory / "router.json").write_text(json.dumps(meta))


def _edit_meta(directory: Path, **changes) -> None:
    meta = json.loads((directory / "router.json").read_text())
    meta.update(changes)
    (directory / "router.json").write_text(json.dumps(meta))
