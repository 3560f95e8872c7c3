"""Generator-quality filters on labelled rows (Niu et al., "Routing with Generated Data", 2026).

Two properties of a generated question predict whether it helps a router trained on it:

- ``self-consistent``: the generator, answering its own question, agrees with its own
  reference (its score is 1). A question the generator cannot answer often has a wrong
  reference, and then every pool model is graded against a wrong key. The check needs the
  generator's answer, so the generator must be one of the labelled models (``trouter
  label`` includes it in the pool; it is a cell like any other).
- ``discriminative``: the pool's observed scores are not all equal. A question every model
  gets right (or wrong) teaches nothing about which model to pick.

The flags are computed from a row's own ``results``, so they hold for files written before
they existed; a row that carries a stamped flag keeps it (the local-pool release stamps
them). Filtered-out rows are never deleted by trouter: `trouter label --filter` writes them
to a side file (:func:`rejected_path`), and training reads the filter as an option.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from trouter.config import TrouterError

FILTERS = ("self-consistent", "discriminative")
#: The row field that stores each filter's flag.
FLAG_FIELDS = {"self-consistent": "self_consistent", "discriminative": "discriminative"}


class FilterError(TrouterError, ValueError):
    """A filter that cannot be applied (unknown name, or no generator answer to check)."""


def parse_filters(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"self-consistent,discriminative"`` (or a list of names) -> checked filter names."""
    if not spec:
        return ()
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise FilterError(f"unknown filter {unknown[0]!r}; choose from {', '.join(FILTERS)}")
    return tuple(dict.fromkeys(names))


def row_flags(row: dict[str, Any], generator: str | None = None) -> dict[str, bool | None]:
    """``{"self_consistent": ..., "discriminative": ...}`` of one labelled row.

    ``self_consistent`` is None when the generator's answer is not among the row's results
    (unknown, not False). ``generator`` defaults to the row's own ``generator`` field.
    """
    results = row.get("results") or {}
    observed = [r.get("performance") for r in results.values()]
    observed = [float(s) for s in observed if s is not None]
    generator = generator or row.get("generator")
    own = (results.get(generator) or {}).get("performance") if generator else None
    return {
        "self_consistent": None if own is None else float(own) == 1.0,
        "discriminative": len(set(observed)) > 1,
    }


def passes(row: dict[str, Any], filters: Iterable[str]) -> bool:
    """Whether ``row`` passes every filter (a stamped flag wins over a computed one).

    Raises FilterError when self-consistency is asked for but cannot be decided.
    """
    computed = None
    for name in filters:
        field = FLAG_FIELDS[name]
        flag = row.get(field)
        if flag is None:
            computed = computed or row_flags(row)
            flag = computed[field]
        if flag is None:
            raise FilterError(
                f"row {row.get('id')!r}: the self-consistent filter needs the generator's own "
                f"answer, but its generator {row.get('generator')!r} is not among the "
                f"labelled models {sorted(row.get('results') or {})}. Label with the "
                "generator in the pool, or leave this filter out"
            )
        if not flag:
            return False
    return True


def keep_rows(rows: Sequence[dict[str, Any]], filters: Iterable[str]) -> list[dict[str, Any]]:
    """The rows that pass every filter (all of them when ``filters`` is empty)."""
    filters = tuple(filters)
    return [row for row in rows if passes(row, filters)] if filters else list(rows)


def rejected_path(out: str | Path) -> Path:
    """Where `trouter label --filter` keeps the rows it filtered out: ``x.rejected.jsonl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejected{out.suffix or '.jsonl'}")


def check_generators(
    questions: Sequence[dict[str, Any]], models: Sequence[str], filters: Iterable[str]
) -> None:
    """Before any call: FilterError when self-consistency is asked for but some question's
    generator is not one of the models that will answer it (its answer would be missing)."""
    if "self-consistent" not in tuple(filters):
        return
    missing = sorted({q.get("generator") or "" for q in questions} - set(models))
    if missing:
        raise FilterError(
            f"--filter self-consistent needs each question's generator among the answering "
            f"models, but {missing[0]!r} is not one of {', '.join(models)}; add it to the "
            "pool (or --models), or leave this filter out"
        )
