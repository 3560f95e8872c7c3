"""A small resumable checkpoint: finished work items keyed by name, tied to the run's inputs.

Long LLM pipelines are killed (budget ceilings, Ctrl-C, crashes). Each finished item is
written at once, atomically (temp file + rename), together with a fingerprint of the
inputs and settings, so a rerun with the same options skips finished items, while a rerun
with different options is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

VERSION = 1


class CheckpointError(RuntimeError):
    """The checkpoint file is unreadable or belongs to a run with other inputs."""


class Checkpoint:
    """``items``: name -> JSON value; ``log``: free-form per-item records (for reports)."""

    def __init__(self, path: Path | None, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.items: dict[str, Any] = {}
        self.log: list[dict[str, Any]] = []
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            stored, items = data["fingerprint"], dict(data["items"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {path} is unreadable ({err}); delete it to start over"
            ) from None
        if stored != self.fingerprint:
            raise CheckpointError(
                f"checkpoint {path} was written by a run with other inputs or settings; "
                "delete it, or rerun with the same options to resume"
            )
        self.items = items
        self.log = list(data.get("log", []))

    def put(self, name: str, value: Any, record: dict[str, Any] | None = None) -> None:
        """Store one finished item and rewrite the file."""
        self.items[name] = value
        if record is not None:
            self.log.append(record)
        if self.path is None:
            return
        payload = {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "items": self.items,
            "log": self.log,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, ensure_ascii=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        """Delete the file once the run's final output is written."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
