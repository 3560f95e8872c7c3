"""The store's JSON text columns: standard JSON written by orjson, read back with NaN.

Python's ``json`` writes non-finite floats as ``NaN`` / ``Infinity``, which is not JSON
(PostgreSQL's ``jsonb``, ``jq`` and most clients reject it), and it formats floats slowly:
encoding a decision's features and utilities was the largest share of the decision log's
CPU. orjson writes a non-finite float as ``null``; the readers of numeric fields map
``null`` back to NaN (:func:`numbers`). Rows written by earlier versions, which may hold
``NaN`` tokens, are read with Python's ``json``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """JSON text of ``value`` (numpy arrays and scalars included; NaN and inf as null)."""
    return orjson.dumps(value, default=_as_list, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _as_list(value: Any) -> Any:
    """What orjson does not write itself: a numpy array that is not C-contiguous (a column
    of a matrix), written as a list."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def loads(text: str | bytes) -> Any:
    """The value of JSON text, including text with ``NaN`` tokens from earlier versions."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # raises json.JSONDecodeError on text that is not JSON


def numbers(values: Any) -> Any:
    """A list or dict of numbers with each null (a non-finite float written) as NaN."""
    if isinstance(values, dict):
        return {k: math.nan if v is None else v for k, v in values.items()}
    if isinstance(values, list):
        return [math.nan if v is None else v for v in values]
    return values
