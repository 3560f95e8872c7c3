"""Router directories as data, never code: weights in safetensors, everything else in JSON.

A trained router directory holds three files:

- ``router.json``: the format marker and version, the trouter version that wrote it, the
  router's registered name, seed and hyper-parameters, the encoder, the pool's model names,
  and the SHA-256 of each other file;
- ``state.json``: the JSON-able part of :meth:`Router.get_state`;
- ``weights.safetensors``: its numpy arrays and torch tensors.

Nothing on the load path can execute code (no pickle, no ``torch.load``), and every file is
checked against its recorded checksum before it is parsed, so that a truncated, damaged or
swapped file is refused with an error naming it rather than half-loaded.

``get_state`` returns nested dicts and lists of numpy arrays, torch tensors and JSON values;
:func:`split_state` moves every array into the weights file and leaves a marker
``{"__array__": key}`` (or ``"__tensor__"``) in its place, which :func:`join_state` resolves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from trouter.config import MalformedDataError

FORMAT = "trouter-router"
FORMAT_VERSION = 1
META_FILE = "router.json"
STATE_FILE = "state.json"
WEIGHTS_FILE = "weights.safetensors"
_MARKERS = ("__array__", "__tensor__")


class RouterFileError(MalformedDataError):
    """A router directory, or one of its files, is missing, damaged or not a trouter router."""


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
    directory.mkdir(parents=True, exist_ok=True)
    # the router name inside state.json too: a state swapped in from another router is refused
    document = {"router": meta["router"], "state": tree}
    state_bytes = json.dumps(document, indent=1, allow_nan=True).encode("utf-8")
    weights_bytes = save(arrays, metadata={"format": FORMAT})
    _write_atomic(directory / STATE_FILE, state_bytes)
    _write_atomic(directory / WEIGHTS_FILE, weights_bytes)
    (directory / "state.pkl").unlink(missing_ok=True)  # an older format's file: never kept
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "trouter_version": __version__,
        **meta,
        "files": {
            STATE_FILE: hashlib.sha256(state_bytes).hexdigest(),
            WEIGHTS_FILE: hashlib.sha256(weights_bytes).hexdigest(),
        },
    }
    # router.json last: a directory is complete only once its checksums are written
    _write_atomic(directory / META_FILE, (json.dumps(full, indent=2) + "\n").encode("utf-8"))
    return directory


def read_meta(directory: Path) -> dict[str, Any]:
    """The checked ``router.json`` of a router directory (format, version, file list)."""
    meta_file = directory / META_FILE
    if not meta_file.is_file():
        raise RouterFileError(
            f"{directory} is not a trained router directory (no {META_FILE}); "
            "create one with `trouter train`"
        )
    meta = _read_json(meta_file)
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
    if not isinstance(files, dict) or set(files) != {STATE_FILE, WEIGHTS_FILE}:
        raise RouterFileError(f'{meta_file}: the "files" checksum table is missing or damaged')
    for key in ("router", "models"):
        if key not in meta:
            raise RouterFileError(f"{meta_file}: field {key!r} is missing")
    return meta


def read_state(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The router state, after every file has matched its recorded SHA-256."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    blobs = {}
    for name, expected in meta["files"].items():
        path = directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RouterFileError(f"{path} is missing (listed in {META_FILE})") from None
        except OSError as err:
            raise RouterFileError(f"cannot read {path}: {err.strerror or err}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise RouterFileError(
                f"{path} does not match the SHA-256 recorded in {META_FILE}: the file is "
                "damaged, truncated or from another router; retrain or restore the directory"
            )
        blobs[name] = data
    document = _parse_json(blobs[STATE_FILE], directory / STATE_FILE)
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


def _read_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RouterFileError(f"cannot read {path}: {err.strerror or err}") from None
    return _parse_json(data, path)


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_constant)
    except UnicodeDecodeError as err:
        raise RouterFileError(
            f"{path}: not UTF-8 text (byte offset {err.start}); damaged or not a router file"
        ) from None
    except json.JSONDecodeError as err:
        raise RouterFileError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "the file is damaged or truncated"
        ) from None


def _constant(name: str) -> float:
    # json writes NaN / Infinity for non-finite floats (an all-masked validation loss)
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]
