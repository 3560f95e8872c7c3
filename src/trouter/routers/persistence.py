"""Router directories as data, never code: weights in safetensors, everything else in JSON.

A trained router directory holds three files:

- ``router.json``: the format marker and version, the trouter version that wrote it, the
  router's registered name, seed and hyper-parameters, the encoder, the pool's model names,
  and the SHA-256 of each other file;
- ``state.json``: the JSON-able part of :meth:`Router.get_state`;
- ``weights.safetensors``: its numpy arrays and torch tensors;
- ``encoder/``: for a router that encodes queries with the ``static`` encoder, a copy of that
  model's files (about 16 MB), so that serving it never distils the model (which needs torch).

Nothing on the load path can execute code (no pickle, no ``torch.load``), and every file is
checked against its recorded checksum before it is parsed, so that a truncated, damaged or
swapped file is refused with an error naming it rather than half-loaded. A directory is also
treated as hostile input (:mod:`trouter.routers.untrusted`): only regular files are read (a
symbolic link, FIFO or device is refused before it is read), each file kind has a size cap
checked before reading, JSON nesting is bounded, and :func:`check_routes` routes one
stand-in query right after loading, so that arrays whose shapes do not fit each other, the
pool or the encoder are refused at load rather than at the first request.

``get_state`` returns nested dicts and lists of numpy arrays, torch tensors and JSON values;
:func:`split_state` moves every array into the weights file and leaves a marker
``{"__array__": key}`` (or ``"__tensor__"``) in its place, which :func:`join_state` resolves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trouter.routers.untrusted import MIB, RouterFileError, lstat_entry, parse_json, read_file

if TYPE_CHECKING:
    from trouter.routers.base import Router

FORMAT = "trouter-router"
#: 2: the files table may list the static encoder's files (``encoder/NAME``); 1 is read too.
FORMAT_VERSION = 2
META_FILE = "router.json"
STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.safetensors"
ENCODER_DIR = "encoder"
_MARKERS = ("__array__", "__tensor__")
_ENCODER_FILE = re.compile(rf"{ENCODER_DIR}/[A-Za-z0-9][A-Za-z0-9._-]{{0,100}}")
#: The largest file of each kind that is read at all (checked before reading).
SIZE_CAPS = {META_FILE: 1 * MIB, STATE_FILE: 256 * MIB, WEIGHTS_FILE: 4096 * MIB}
ENCODER_FILE_CAP = 256 * MIB


# ----- state <-> (JSON tree, arrays) ------------------------------------------------------
def split_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(JSON-able tree with array markers, {key: contiguous numpy array})."""
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str) or key in _MARKERS:
                    raise TypeError(f"router state {path or '/'}: key {key!r} cannot be saved")
                out[key] = walk(item, f"{path}/{key}")
            return out
        if isinstance(value, list | tuple):
            return [walk(item, f"{path}/{i}") for i, item in enumerate(value)]
        if isinstance(value, np.ndarray):
            return {"__array__": _add(arrays, path, value)}
        if _is_tensor(value):
            return {"__tensor__": _add(arrays, path, value.detach().cpu().numpy())}
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, str | bool | int | float):
            return value
        raise TypeError(
            f"router state {path}: a {type(value).__name__} cannot be saved; return numpy "
            "arrays, torch tensors or JSON values (dict, list, str, number, bool, None)"
        )

    return walk(state, ""), arrays


def join_state(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`split_state`: markers replaced by their arrays (or tensors)."""
    if isinstance(tree, dict):
        if len(tree) == 1 and next(iter(tree)) in _MARKERS:
            ((kind, key),) = tree.items()
            if key not in arrays:
                raise KeyError(f"array {key!r} is missing from {WEIGHTS_FILE}")
            if kind == "__tensor__":
                import torch

                return torch.from_numpy(arrays[key].copy())
            return arrays[key]
        return {k: join_state(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [join_state(v, arrays) for v in tree]
    return tree


def _add(arrays: dict[str, np.ndarray], path: str, array: np.ndarray) -> str:
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"router state {path}: arrays of dtype {array.dtype} cannot be saved as weights; "
            "store text as a list of str"
        )
    key = path.lstrip("/")
    arrays[key] = np.ascontiguousarray(array)
    return key


def _is_tensor(value: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")  # never import torch just to check
    return torch is not None and isinstance(value, torch.Tensor)


# ----- files -----------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file + rename: a crash mid-save never leaves a half-written file in place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_router_dir(directory: Path, meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write ``state`` and ``meta`` (plus format, version and checksums) into ``directory``."""
    from safetensors.numpy import save

    from trouter import __version__

    tree, arrays = split_state(state)
    encoder_files = _encoder_files(meta)
    directory.mkdir(parents=True, exist_ok=True)
    # the router name inside state.json too: a state swapped in from another router is refused
    document = {"router": meta["router"], "state": tree}
    state_bytes = json.dumps(document, indent=1, allow_nan=True).encode("utf-8")
    weights_bytes = save(arrays, metadata={"format": FORMAT})
    _write_atomic(directory / STATE_FILE, state_bytes)
    _write_atomic(directory / WEIGHTS_FILE, weights_bytes)
    (directory / "state.pkl").unlink(missing_ok=True)  # an older format's file: never kept
    digests = {}
    if encoder_files:
        (directory / ENCODER_DIR).mkdir(exist_ok=True)
        for name, data in encoder_files.items():
            _write_atomic(directory / name, data)
            digests[name] = hashlib.sha256(data).hexdigest()
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trouter_version": __version__,
        **meta,
        "files": {
            STATE_FILE: hashlib.sha256(state_bytes).hexdigest(),
            WEIGHTS_FILE: hashlib.sha256(weights_bytes).hexdigest(),
            **digests,
        },
    }
    # router.json last: a directory is complete only once its checksums are written
    _write_atomic(directory / META_FILE, (json.dumps(full, indent=2) + "\n").encode("utf-8"))
    return directory


def _encoder_files(meta: dict[str, Any]) -> dict[str, bytes]:
    """``encoder/NAME`` -> bytes of the static model this process encodes with, for a router
    that encodes queries with it; {} for any other router."""
    from trouter.routers.base import ROUTERS

    cls = ROUTERS.get(meta["router"])
    if meta.get("encoder") != "static" or (cls is not None and cls.query_independent):
        return {}
    from trouter.encoders import current_static_dir, static_model_dir

    folder = current_static_dir() or static_model_dir()
    return {
        f"{ENCODER_DIR}/{path.name}": path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.is_file() and _ENCODER_FILE.fullmatch(f"{ENCODER_DIR}/{path.name}")
    }


def read_meta(directory: Path) -> dict[str, Any]:
    """The checked ``router.json`` of a router directory (format, version, file list)."""
    meta_file = directory / META_FILE
    if not os.path.lexists(meta_file):
        raise RouterFileError(
            f"{directory} is not a trained router directory (no {META_FILE}); "
            "create one with `trouter train`"
        )
    meta = parse_json(read_file(meta_file, SIZE_CAPS[META_FILE]), meta_file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        hint = ""
        if (directory / "state.pkl").exists():
            hint = (
                " It holds a state.pkl from an older trouter; pickle files can run code, so "
                "they are never loaded: retrain the router with `trouter train`."
            )
        raise RouterFileError(
            f'{meta_file} is not a trouter router file (no "format": "{FORMAT}").{hint}'
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RouterFileError(
            f"{meta_file}: router format version {version!r} is not supported by this trouter "
            f"(reads up to {FORMAT_VERSION}; written by trouter {meta.get('trouter_version')})"
        )
    files = meta.get("files")
    if (
        not isinstance(files, dict)
        or not {STATE_FILE, WEIGHTS_FILE} <= set(files)
        or not all(isinstance(digest, str) for digest in files.values())
    ):
        raise RouterFileError(f'{meta_file}: the "files" checksum table is missing or damaged')
    strange = sorted(
        set(files) - {STATE_FILE, WEIGHTS_FILE} - set(filter(_ENCODER_FILE.fullmatch, files))
    )
    if strange:
        raise RouterFileError(
            f"{meta_file} lists a file a router directory never holds: {strange[0]!r} (only "
            f"{STATE_FILE}, {WEIGHTS_FILE} and {ENCODER_DIR}/NAME files are read)"
        )
    for key in ("router", "models"):
        if key not in meta:
            raise RouterFileError(f"{meta_file}: field {key!r} is missing")
    return meta


def read_state(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The router state, after every file has matched its recorded SHA-256."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    blobs = {}
    encoder_dir = directory / ENCODER_DIR
    has_encoder = any(name.startswith(f"{ENCODER_DIR}/") for name in meta["files"])
    if has_encoder and not stat.S_ISDIR(lstat_entry(encoder_dir).st_mode):
        raise RouterFileError(f"{encoder_dir} is not a directory (a link or a file)")
    for name, expected in meta["files"].items():
        path = directory / name
        data = read_file(path, SIZE_CAPS.get(name, ENCODER_FILE_CAP))
        if hashlib.sha256(data).hexdigest() != expected:
            raise RouterFileError(
                f"{path} does not match the SHA-256 recorded in {META_FILE}: the file is "
                "damaged, truncated or from another router; retrain or restore the directory"
            )
        if name in (STATE_FILE, WEIGHTS_FILE):
            blobs[name] = data
    if has_encoder:
        _use_encoder(directory, meta)
    document = parse_json(blobs[STATE_FILE], directory / STATE_FILE)
    if not isinstance(document, dict) or not isinstance(document.get("state"), dict):
        raise RouterFileError(f'{directory / STATE_FILE}: expected {{"router", "state"}}')
    if document.get("router") != meta["router"]:
        raise RouterFileError(
            f"{directory / STATE_FILE} holds the state of router {document.get('router')!r}, "
            f"but {META_FILE} says {meta['router']!r}: files from different routers were mixed"
        )
    try:
        arrays = load(blobs[WEIGHTS_FILE])
    except (SafetensorError, ValueError) as err:
        raise RouterFileError(
            f"{directory / WEIGHTS_FILE}: not a valid safetensors file: {err}"
        ) from None
    try:
        return join_state(document["state"], arrays)
    except KeyError as err:
        raise RouterFileError(f"{directory / STATE_FILE}: {err.args[0]}") from None


def _use_encoder(directory: Path, meta: dict[str, Any]) -> None:
    """Make the router's verified copy of the static model this process's static encoder."""
    from trouter.encoders import EncoderError, use_static_model

    if meta.get("encoder") != "static":
        raise RouterFileError(
            f"{directory / META_FILE} lists static encoder files, but records encoder "
            f"{meta.get('encoder')!r}"
        )
    try:
        use_static_model(directory / ENCODER_DIR, str(directory))
    except EncoderError as err:
        raise RouterFileError(str(err)) from None


# ----- after loading ---------------------------------------------------------------------
def check_routes(router: Router, directory: Path) -> None:
    """Route one stand-in query through a loaded router, or refuse it with a RouterFileError.

    The stand-in encoder gives vectors of the encoder's dimension without loading a model, so
    this costs a forward pass. Arrays whose shapes do not fit each other, the pool or the
    encoder fail here, at load, with the directory named, instead of at the first request.
    """
    if router.needs_labels:
        return
    from trouter.encoders import stand_in_encoders
    from trouter.evaluation.scenarios import Weights

    models = list(router.models_ or [])
    try:
        with stand_in_encoders():
            prediction = router.predict(["a stand-in query to check the saved arrays"])
            shapes = {np.shape(prediction.performance), np.shape(prediction.cost)}
            if shapes != {(1, len(models))}:
                raise ValueError(f"predictions of shape {sorted(shapes)} for {len(models)} models")
            prediction.choose(Weights(performance=1.0, cost=-0.5))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RuntimeError) as err:
        raise RouterFileError(
            f"{directory}: the saved arrays do not fit router {router.name!r} with "
            f"{len(models)} models and the {router.encoder!r} encoder: routing a stand-in "
            f"query failed ({type(err).__name__}: {err})"
        ) from None
