"""Shared helpers for the suite loaders: file reading, cell validation, fixed splits,
token counts and list prices.

Every error names the file (and column / row where there is one), because the data are
public releases that a user may have downloaded in another version.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from trouter.config import DataNotFoundError, MalformedDataError

# Seed of the fixed train/test split of sources that ship without one. It is a constant on
# purpose: the run seed only moves the validation split, so every run sees the same test set.
SPLIT_SEED = 20240501
TEST_FRACTION = 0.3


# ----- files ---------------------------------------------------------------------------
def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(f"data folder {path} does not exist")
    return path


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataNotFoundError(f"data file {path} does not exist")
    return path


def read_json(path: Path) -> object:
    require_file(path)
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MalformedDataError(f"{path}: not valid JSON ({err})") from err


def read_jsonl(path: Path) -> list[dict]:
    require_file(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise MalformedDataError(f"{path}, line {number}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise MalformedDataError(f"{path}, line {number}: expected a JSON object")
            rows.append(row)
    return rows


def read_csv(path: Path, required: Sequence[str], usecols=None) -> pd.DataFrame:
    """All cells as strings (empty cells stay ""), so that each loader decides what an empty
    cell means instead of pandas guessing."""
    require_file(path)
    csv.field_size_limit(1 << 30)
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, usecols=usecols
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MalformedDataError(f"{path}: cannot parse as CSV ({err})") from err
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise MalformedDataError(f"{path}: missing column(s) {missing}")
    return frame


def records(path: Path, data: object, keys: Sequence[str]) -> list[dict]:
    """Check that parsed JSON is a list of objects that all have ``keys``."""
    if not isinstance(data, list):
        raise MalformedDataError(f"{path}: expected a JSON list of objects")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise MalformedDataError(f"{path}, item {index}: expected a JSON object")
        missing = [key for key in keys if key not in row]
        if missing:
            raise MalformedDataError(f"{path}, item {index}: missing field(s) {missing}")
    return data


# ----- cells ---------------------------------------------------------------------------
def numeric_column(path: Path, column: str, values: Iterable[str]) -> np.ndarray:
    """Strings -> floats; empty cells -> NaN (masked, never 0); anything else is an error."""
    strings = pd.Series(list(values), dtype=str).str.strip()
    numbers = pd.to_numeric(strings.where(strings != ""), errors="coerce").to_numpy(float)
    bad = np.flatnonzero(np.isnan(numbers) & (strings != "").to_numpy())
    if bad.size:
        raise MalformedDataError(
            f"{path}, column {column!r}: unparseable value {strings.iloc[bad[0]]!r} "
            f"(data row {bad[0] + 1}; {bad.size} such cell(s))"
        )
    return numbers


def check_performance(path: Path, column: str, values: np.ndarray) -> np.ndarray:
    """Performance must be in [0, 1] where known; NaN marks a masked cell."""
    values = np.asarray(values, dtype=float)
    bad = np.flatnonzero(~np.isnan(values) & ((values < 0) | (values > 1)))
    if bad.size:
        raise MalformedDataError(
            f"{path}, column {column!r}: performance {values[bad[0]]!r} outside [0, 1] "
            f"(row {bad[0] + 1}; {bad.size} such cell(s))"
        )
    return values


def check_cost(path: Path, column: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    bad = np.flatnonzero(~np.isnan(values) & ((values < 0) | ~np.isfinite(values)))
    if bad.size:
        raise MalformedDataError(
            f"{path}, column {column!r}: cost {values[bad[0]]!r} is negative or infinite "
            f"(row {bad[0] + 1})"
        )
    return values


def score_value(path: Path, where: str, model: str, value: object) -> float:
    """One JSON score -> float in [0, 1]; null (or a NaN literal) -> NaN (masked)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedDataError(f"{path}, {where}: score of {model!r} is {value!r}, not a number")
    if not 0.0 <= float(value) <= 1.0:
        raise MalformedDataError(f"{path}, {where}: score of {model!r} is {value!r}, not in [0, 1]")
    return float(value)


# ----- splits --------------------------------------------------------------------------
def fixed_split(tasks: Sequence[str], test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """A train/test label per row: ``test_fraction`` of each task's rows go to test, drawn
    with the constant :data:`SPLIT_SEED` (not the run seed), so the test set never moves."""
    tasks = np.asarray(tasks, dtype=object)
    splits = np.full(len(tasks), "train", dtype=object)
    rng = np.random.default_rng(SPLIT_SEED)
    for task in sorted(set(tasks)):
        rows = np.flatnonzero(tasks == task)
        n_test = int(round(len(rows) * test_fraction))
        if len(rows) >= 2 and n_test >= 1:
            splits[rng.choice(rows, size=n_test, replace=False)] = "test"
    return splits


# ----- tokens and prices ---------------------------------------------------------------
def _litellm_dir() -> Path | None:
    """LiteLLM's package folder, found without importing it (the import takes seconds and
    tries the network for a fresh price map)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@lru_cache(maxsize=1)
def _tokenizer():
    """OpenAI's cl100k_base encoding, read from the copy LiteLLM bundles (works offline)."""
    import tiktoken

    folder = _litellm_dir()
    bundled = folder / "litellm_core_utils" / "tokenizers" if folder else None
    if "TIKTOKEN_CACHE_DIR" not in os.environ and bundled and bundled.is_dir():
        # The same setting LiteLLM itself makes on import.
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)
    return tiktoken.get_encoding("cl100k_base")


def count_tokens(texts: Sequence[str]) -> tuple[np.ndarray, str]:
    """Token counts and a phrase naming how they were counted.

    cl100k_base is GPT-4's tokenizer; for other models it is a proxy (their own tokenizers
    are not available offline). If it cannot be loaded the count falls back to
    characters / 4 and the phrase says so.
    """
    try:
        encoding = _tokenizer()
    except Exception:  # noqa: BLE001 - any failure to load the BPE file means: fall back
        return np.array([len(t) / 4.0 for t in texts]), "characters/4 (tokenizer unavailable)"
    # A plain loop: the batch API's thread pool costs more than it saves on short texts.
    counts = [len(encoding.encode_ordinary(text)) for text in texts]
    return np.asarray(counts, dtype=float), "cl100k_base tokens"


@lru_cache(maxsize=1)
def litellm_price_map() -> dict[str, dict]:
    """LiteLLM's bundled model price map ({} if LiteLLM or the file is missing)."""
    folder = _litellm_dir()
    path = folder / "model_prices_and_context_window_backup.json" if folder else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def price_per_mtok(key: str, fallback: tuple[float, float]) -> tuple[float, float, str]:
    """(input, output) USD per 1M tokens for a LiteLLM price-map key, and where they came
    from; ``fallback`` (public list prices) when the key is not in the bundled map."""
    entry = litellm_price_map().get(key, {})
    inp, out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
    if isinstance(inp, int | float) and isinstance(out, int | float):
        return inp * 1e6, out * 1e6, f"litellm price map {key!r}"
    return fallback[0], fallback[1], f"list price (not in litellm price map: {key!r})"
