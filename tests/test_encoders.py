"""The two query encoders: the distilled static model is verified by checksum, each encoder
has its own cache, and a router records the encoder it was trained with and refuses another."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import trouter
from trouter.data.suites import load_suite
from trouter.encoders import (
    MANIFEST,
    EncoderError,
    _verified,
    get_encoder,
    static_model_dir,
)
from trouter.routers import make_router
from trouter.routers.base import Router
from trouter.routers.persistence import RouterFileError


@pytest.fixture(scope="module")
def static():
    return get_encoder("static")


def test_static_model_is_distilled_once_with_its_checksum_recorded(static):
    folder = static_model_dir()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"] == "all-MiniLM-L6-v2" and manifest["pca_dims"] == static.dim
    assert set(manifest["sha256"]) >= {"model.safetensors", "tokenizer.json"}
    assert _verified(folder)


def test_a_damaged_static_model_fails_its_checksum(static, tmp_path):
    copy = tmp_path / "static"
    shutil.copytree(static_model_dir(), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not _verified(copy)
    (copy / MANIFEST).write_text("{not json")
    assert not _verified(copy)


def test_static_vectors_are_normalised_and_keep_meaning(static):
    texts = [
        "Solve for x: 3x + 5 = 20.",
        "What is x if 2x - 4 = 10?",
        "Write a Python function that reverses a string.",
    ]
    vectors = static.encode(texts)
    assert vectors.shape == (3, static.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]  # two equations are closer than code


def test_each_encoder_has_its_own_cache(static):
    minilm = get_encoder("minilm")
    assert minilm.cache_path != static.cache_path
    assert minilm.dim == 384 and static.dim == 256
    with pytest.raises(EncoderError, match="unknown encoder 'bert'"):
        get_encoder("bert")


@pytest.fixture(scope="module")
def static_knn_dir(tmp_path_factory):
    train = load_suite("routerbench").split("train")
    rows = np.sort(np.random.default_rng(0).choice(len(train), 200, replace=False))
    router = make_router("knn", k=10, weighting="uniform", encoder="static")
    return router.fit(train.subset(rows)).save(tmp_path_factory.mktemp("router") / "knn")


def test_a_router_records_its_encoder_and_refuses_another(static_knn_dir):
    meta = json.loads((static_knn_dir / "router.json").read_text())
    assert meta["params"]["encoder"] == "static"
    service = trouter.load(static_knn_dir, encoder="static")
    assert service.encoder == "static" and service.router.index_x_.shape[1] == 256
    with pytest.raises(EncoderError, match="trained with the 'static' encoder"):
        trouter.load(static_knn_dir, encoder="minilm")


def test_a_router_saved_before_encoders_were_recorded_is_minilm(tmp_path):
    train = load_suite("routerbench").split("train")
    legacy = make_router("best-single").fit(train).save(tmp_path / "legacy")
    meta = json.loads((legacy / "router.json").read_text())
    del meta["params"]["encoder"], meta["encoder"]
    meta["format_version"] = 1
    (legacy / "router.json").write_text(json.dumps(meta))
    assert Router.load(legacy).encoder == "minilm"


def test_a_static_router_and_its_shapes_are_checked_against_the_recorded_encoder(
    static_knn_dir, tmp_path
):
    """Records edited to say MiniLM (384-d) over a 256-d index: refused at load."""
    legacy = tmp_path / "legacy"
    shutil.copytree(static_knn_dir, legacy)
    meta = json.loads((legacy / "router.json").read_text())
    del meta["params"]["encoder"], meta["encoder"]
    (legacy / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="lists static encoder files, but records"):
        Router.load(legacy)
    meta["files"] = {k: v for k, v in meta["files"].items() if not k.startswith("encoder/")}
    (legacy / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="'minilm' encoder: routing a stand-in query"):
        Router.load(legacy)


def test_a_router_file_whose_encoder_records_disagree_is_refused(static_knn_dir, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(static_knn_dir, edited)
    meta = json.loads((edited / "router.json").read_text())
    meta["params"]["encoder"] = "minilm"
    (edited / "router.json").write_text(json.dumps(meta))
    with pytest.raises(RouterFileError, match="records encoder 'static'"):
        Router.load(edited)


def test_encoder_is_a_parameter_of_every_learned_router():
    for name in ("knn", "mlp", "mf", "metric-router", "trouter", "trouter+"):
        router = make_router(name, encoder="static")
        assert router.encoder == "static", name
    with pytest.raises(EncoderError):
        make_router("knn", encoder="word2vec")
