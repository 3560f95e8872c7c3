"""What a labelling run is told (:class:`LabelSettings`) and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LabelSettings:
    """Knobs of a labelling run (the CLI's options)."""

    max_cost_usd: float | None = None
    answer_max_tokens: int | None = 1024
    judge_max_tokens: int = 64
    #: Assumed answer length for the dry run, and for the cost ceiling's projection until a
    #: model has answered (then its mean answer length is used).
    assumed_answer_tokens: int = 300
    #: Questions worked on at once; the client's own limit caps concurrent calls.
    questions_in_flight: int = 8
    #: Generator-quality filters (trouter.data.label_filters); failing rows go to a side file.
    filters: tuple[str, ...] = ()


@dataclass
class LabelReport:
    """What a run did; ``written`` counts lines appended by this run."""

    total: int = 0
    already_done: int = 0
    written: int = 0
    #: Of ``written``, rows that failed ``filters`` (in the rejected side file).
    rejected: int = 0
    abandoned: int = 0
    #: Questions not written because every call for them failed (retried by a rerun).
    failed: int = 0
    aborted: str | None = None
    masked_cells: int = 0
    calls: int = 0
    cached_calls: int = 0
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    stopped_by_budget: bool = False
    repaired_tail: bool = False
    notes: list[str] = field(default_factory=list)
