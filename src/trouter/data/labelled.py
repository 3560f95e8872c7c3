"""The labelled JSONL format written by ``trouter label``, read back as a RoutingDataset.

One JSON object per line (see CONTRIBUTING.md, "Labelled JSONL")::

    {"id", "question", "reference", "leaf_id", "generator",
     "results": {model: {"answer", "performance": float|null, "cost_usd": float|null,
                         "input_tokens", "output_tokens", "latency_s", "error": str|null}},
     optional: "benchmark": str, "task": str, "cost_source": str}

``leaf_id`` may be ``""`` or ``null``: the row's task type is *unknown* (a real query, say);
routers that need one then type it by embedding similarity to the taxonomy leaves.
``benchmark`` names the source a row comes from (cost is min-max normalised per benchmark;
default ``"synthetic"``); ``task`` is the group held out by leave-one-task-out (default: the
leaf's domain, else the benchmark); ``cost_source`` says how ``cost_usd`` was obtained.

``trouter label`` also records ``judge_cost_usd`` per cell (its share of the one verdict
its answer got -- models that gave the same answer share one; not part of the routing
cost). A null performance (failed call, unparseable judge verdict) or a null
cost (unpriced model, failed call) is a masked cell, loaded as NaN: it must never read as a
score of 0. The file is the synthetic training set for cold start, so the dataset has only
train and validation splits (validation carved per taxonomy leaf); testing happens on a
real benchmark suite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trouter.config import DataNotFoundError, MalformedDataError
from trouter.data.dataset import ModelInfo, RoutingDataset
from trouter.data.jsonl import iter_json_objects
from trouter.data.label_filters import keep_rows

if TYPE_CHECKING:
    from trouter.taxonomy.model import Taxonomy

#: Keys every labelled row has, with the type each must be.
ROW_FIELDS: dict[str, type] = {
    "id": str,
    "question": str,
    "reference": str,
    "leaf_id": str,
    "generator": str,
    "results": dict,
}
#: Optional keys (non-empty strings): where a row comes from and how its cost was measured.
OPTIONAL_FIELDS = ("benchmark", "task", "cost_source")
DEFAULT_BENCHMARK = "synthetic"
DEFAULT_COST_SOURCE = "usd-per-call, measured by trouter label (tokens x prices)"
LEAF_SEPARATOR = " > "
#: Longest question kept for training; longer ones are cut (with a warning naming the row).
#: The encoders read only the first few hundred tokens, so the cut changes no embedding.
MAX_QUESTION_CHARS = 100_000
log = logging.getLogger(__name__)


def leaf_domain(leaf_id: str) -> str:
    """The domain of a taxonomy leaf id (the part before the first ``" > "``)."""
    return leaf_id.split(LEAF_SEPARATOR, 1)[0].strip()


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _number(value: Any, where: str, name: str, low: float | None = None) -> float | None:
    """A finite number (or None), checked against ``low`` and for performance against 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        shown = repr(value) if len(repr(value)) < 40 else f"{repr(value)[:40]}..."
        raise MalformedDataError(f"{where}: {name} must be a number or null, got {shown}")
    if low is not None and value < low:
        raise MalformedDataError(f"{where}: {name} must be >= {low}, got {value!r}")
    if name.endswith("performance") and value > 1:
        raise MalformedDataError(f"{where}: {name} must be in [0, 1], got {value!r}")
    return float(value)


def check_row(row: Any, where: str) -> dict[str, Any]:
    """Validate one parsed row; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(row, dict):
        raise MalformedDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key, kind in ROW_FIELDS.items():
        if key not in row:
            raise MalformedDataError(f"{where}: missing field {key!r}")
        if key == "leaf_id" and row[key] is None:
            continue  # an unknown task type
        if not isinstance(row[key], kind):
            raise MalformedDataError(
                f"{where}: field {key!r} must be a {kind.__name__}, got {type(row[key]).__name__}"
            )
    for key in OPTIONAL_FIELDS:
        if key in row and not (isinstance(row[key], str) and row[key].strip()):
            raise MalformedDataError(f"{where}: optional field {key!r} must be a non-empty string")
    for model, result in row["results"].items():
        if not isinstance(result, dict):
            raise MalformedDataError(f"{where}: results[{model!r}] must be an object")
        _number(result.get("performance"), where, f"results[{model!r}].performance", low=0.0)
        _number(result.get("cost_usd"), where, f"results[{model!r}].cost_usd", low=0.0)
        for key in ("input_tokens", "output_tokens", "latency_s"):
            _number(result.get(key), where, f"results[{model!r}].{key}", low=0.0)
    return row


def read_labelled(
    path: str | Path, max_question_chars: int | None = MAX_QUESTION_CHARS
) -> list[dict[str, Any]]:
    """All rows of a labelled file, validated; blank lines are skipped.

    A question longer than ``max_question_chars`` is cut to that length, with a warning
    naming its file and line (a line over :data:`~trouter.data.jsonl.MAX_LINE_BYTES` is
    refused). Raises :class:`MalformedDataError` naming the file and line for a bad row or a
    repeated id, and :class:`DataNotFoundError` when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"labelled file {path} does not exist")
    rows: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for where, number, row in iter_json_objects(path):
        check_row(row, where)
        if max_question_chars is not None and len(row["question"]) > max_question_chars:
            log.warning(
                "%s: question of %s characters cut to the first %s for training",
                where, f"{len(row['question']):,}", f"{max_question_chars:,}",
            )  # fmt: skip
            row["question"] = row["question"][:max_question_chars]
        if row["id"] in first_line:
            raise MalformedDataError(
                f"{where}: id {row['id']!r} repeats line {first_line[row['id']]}"
            )
        first_line[row["id"]] = number
        rows.append(row)
    return rows


def load_labelled(
    path: str | Path,
    taxonomy: Taxonomy | None = None,
    validation_fraction: float = 0.25,
    seed: int = 0,
    filters: Sequence[str] = (),
) -> RoutingDataset:
    """A labelled file as a :class:`RoutingDataset` with train/validation splits per leaf.

    ``filters`` (names from :data:`trouter.data.label_filters.FILTERS`) keeps only the rows
    that pass them; FilterError when one cannot be decided for a row.

    Models are every model seen in any row, in order of first appearance; a model absent
    from a row is masked there. With a ``taxonomy``, every row's leaf must be one of its
    leaves (training on rows from another taxonomy would silently mislabel task types).
    ``tasks`` is the leaf's domain, so leave-one-task-out holds out whole domains.
    """
    path = Path(path)
    rows = read_labelled(path)
    if not rows:
        raise MalformedDataError(f"{path}: the labelled file has no rows")
    if filters:
        kept = keep_rows(rows, filters)
        if not kept:
            raise MalformedDataError(
                f"{path}: none of its {len(rows)} rows passes the filters "
                f"{', '.join(filters)}; train without them, or label more questions"
            )
        rows = kept
    if taxonomy is not None:
        known = set(taxonomy.leaf_ids())
        for row in rows:
            if row["leaf_id"] and row["leaf_id"] not in known:
                raise MalformedDataError(
                    f"{path}: row {row['id']!r} has leaf {row['leaf_id']!r}, which is not a "
                    f"leaf of taxonomy {taxonomy.name!r}"
                )
    names: list[str] = list(dict.fromkeys(m for row in rows for m in row["results"]))
    if not names:
        raise MalformedDataError(
            f'{path}: no row has any model results (every "results" is empty), so there is '
            "nothing to learn from; label the questions with `trouter label` first"
        )
    column = {name: j for j, name in enumerate(names)}
    performance = np.full((len(rows), len(names)), np.nan)
    cost = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        for model, result in row["results"].items():
            value = result.get("performance")
            spent = result.get("cost_usd")
            performance[i, column[model]] = np.nan if value is None else float(value)
            cost[i, column[model]] = np.nan if spent is None else float(spent)
    if np.isnan(performance).all():
        raise MalformedDataError(
            f"{path}: every performance is null (masked) in all {len(rows)} rows x "
            f"{len(names)} models: every call failed or no verdict could be read, so there "
            'is nothing to learn from. See the "error" fields, fix the pool or judge, and '
            "rerun `trouter label` on a new file"
        )
    leaf_ids = np.asarray([row["leaf_id"] or "" for row in rows], dtype=object)
    benchmarks = [row.get("benchmark", DEFAULT_BENCHMARK) for row in rows]
    tasks = [
        row.get("task") or (leaf_domain(leaf) if leaf else bench)
        for row, leaf, bench in zip(rows, leaf_ids, benchmarks, strict=True)
    ]
    sources = list(dict.fromkeys(row.get("cost_source", DEFAULT_COST_SOURCE) for row in rows))
    return RoutingDataset(
        name=path.stem,
        query_ids=np.asarray([row["id"] for row in rows], dtype=object),
        texts=[row["question"] for row in rows],
        tasks=np.asarray(tasks, dtype=object),
        benchmarks=np.asarray(benchmarks, dtype=object),
        models=[ModelInfo(name) for name in names],
        performance=performance,
        cost=cost,
        splits=split_per_leaf(
            np.asarray([leaf or f"task:{t}" for leaf, t in zip(leaf_ids, tasks, strict=True)]),
            validation_fraction,
            seed,
        ),
        cost_source="; ".join(sources),
        leaf_ids=leaf_ids,
    )


def split_per_leaf(leaf_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """train/validation labels: ``fraction`` of each leaf's rows (rounded) go to validation.

    A leaf with a single row stays in train, so every leaf the router sees in validation
    it has also seen in training.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    splits = np.full(len(leaf_ids), "train", dtype=object)
    for leaf in sorted(set(leaf_ids)):
        rows = np.flatnonzero(leaf_ids == leaf)
        n_val = int(round(len(rows) * fraction))
        if len(rows) >= 2 and n_val >= 1:
            splits[rng.choice(rows, size=min(n_val, len(rows) - 1), replace=False)] = "validation"
    return splits
